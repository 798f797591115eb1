"""The VDDK test world (see world.py)."""
