"""Tests, protocol tier."""
