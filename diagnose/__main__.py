"""python -m diagnose PATH [PATH ...] (see diagnose/cli.py)."""
import os
import sys

# the repo root holds facts.py and errors.py, which diagnose shares with train.py
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from diagnose.cli import main  # noqa: E402
from errors import exit_on_user_error  # noqa: E402

try:
    sys.exit(exit_on_user_error(main))
except BrokenPipeError:  # `python -m diagnose ... | head`: the reader left, nothing is wrong
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(0)
