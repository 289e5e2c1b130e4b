"""Dataset folders; each has a prepare.py (run it as a script)."""
