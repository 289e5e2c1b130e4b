"""The ground-truth zoo: real tiny training runs with known verdicts, rendered into many log formats (generate.py)."""
