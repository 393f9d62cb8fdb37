"""Tests, system tier."""
