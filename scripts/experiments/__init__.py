"""Shared pieces of the paper-style experiment scripts (scripts/exp_*.py)."""
