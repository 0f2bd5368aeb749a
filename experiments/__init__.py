"""Placeholder package; see ../shared/DESIGN.md."""
