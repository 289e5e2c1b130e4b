"""
One-line errors for the command-line programs: a UserError is a problem with
the user's input (config, files, flags) and is printed as `error: ...`,
never as a traceback.
"""
import sys


class UserError(Exception):
    """A problem the user can fix; the message names the problem and the fix, in one line."""


def exit_on_user_error(main):
    """Run main(); print a UserError as one line and exit 2; Ctrl-C exits 130 quietly."""
    try:
        return main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
