"""Worked examples that use the toolkit from outside it (run them from the repository root)."""
