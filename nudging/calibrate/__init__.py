"""Choosing gamma from data: `nudging calibrate` and `--gamma auto` (see docs/calibrate.md)."""
