"""Fault runs (``scripts/faults.py``): kill, fail over, restart, scale, freeze the broker, poison
and overload a running system, and count what was lost, duplicated and how fast it recovered."""
