"""The one way every command-line entry point (lewm_fast.* and bench.*) reports errors.

    if __name__ == "__main__":
        sys.exit(run_cli(main))

A user error (bad argument, missing or malformed file, wrong checkpoint for the env, full disk, ...)
prints one line, `PROG: error: MESSAGE`, to stderr and exits with code 2, the code argparse uses for
bad arguments. `--debug` anywhere on the command line, or LEWM_DEBUG=1 in the environment, lets the
exception through with its traceback instead. Anything else (a bug) is not caught and keeps its traceback.
"""
from __future__ import annotations

import os
import sys

# The exception types this package raises for bad input or a failing environment (disk, network).
USER_ERRORS = (ValueError, TypeError, OSError, NotImplementedError, FloatingPointError, ImportError)


def debug_requested(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("LEWM_DEBUG", "") not in ("", "0")


def run_cli(main, argv: list[str] | None = None, prog: str | None = None) -> int:
    """Run main(argv) and turn the package's errors into one line and exit code 2. Returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(argv)
    argv = [a for a in argv if a != "--debug"]
    prog = prog or os.path.basename(sys.argv[0]) or "lewm_fast"
    if prog in ("__main__.py", "-c"):
        prog = "lewm_fast"
    try:
        rc = main(argv)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except SystemExit as e:
        if isinstance(e.code, str):   # raise SystemExit("message"): a user error stated by the tool itself
            if debug:
                raise
            print(f"{prog}: error: {e.code}", file=sys.stderr)
            return 2
        return e.code or 0
    except USER_ERRORS as e:
        if debug:
            raise
        print(f"{prog}: error: {one_line(e)}  (--debug or LEWM_DEBUG=1 for the traceback)", file=sys.stderr)
        return 2
    return rc if isinstance(rc, int) else 0


def one_line(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    if isinstance(e, OSError) and e.strerror:   # "[Errno 28] ..." -> the message, and the file if any
        text = e.strerror + (f": {e.filename}" if e.filename else "")
    return " ".join(text.split())


def positive(name: str, value, minimum: int = 1):
    """Argument check done up front: value >= minimum (None passes: 'use the default')."""
    if value is not None and value < minimum:
        raise SystemExit(f"{name} must be >= {minimum}, got {value}")
    return value
