"""Tests, unit tier."""
