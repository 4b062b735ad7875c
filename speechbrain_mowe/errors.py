"""Errors a user can cause, reported in one line instead of a traceback.

The recipes' ``train.py`` and ``compare.py``, the preparation scripts and the
``speechbrain-mowe`` command run their ``main`` through :func:`run_main`. A
bad path, an unknown family or task, a malformed override or manifest raises
one of :data:`USER_ERRORS` with a message that names the file, row or key;
:func:`run_main` prints that message on one line and exits with status 1.
Set the environment variable ``SPEECHBRAIN_MOWE_DEBUG=1`` to see the
traceback instead. Any other exception is a bug and keeps its traceback.
"""

import os
import sys
from typing import Any, Callable

#: Set to 1 to see the traceback of an error a user caused.
DEBUG_VARIABLE = "SPEECHBRAIN_MOWE_DEBUG"

#: What the package raises for a bad input; the message says what is wrong.
#: (``AudioError`` is a ``ValueError``.)
USER_ERRORS = (ValueError, KeyError, OSError)


def one_line(error: BaseException) -> str:
    """The message of ``error`` on one line (a ``KeyError``'s without its quotes).

    Example
    -------
    >>> one_line(KeyError("Unknown task 'x'"))
    "Unknown task 'x'"
    >>> one_line(ValueError("first\\n  second"))
    'first second'
    """
    text = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def run_main(main: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Calls ``main(*args, **kwargs)``; an error a user caused exits with one line.

    Arguments
    ---------
    main : callable
        The program.
    *args, **kwargs
        Its arguments (e.g. ``sys.argv[1:]``).

    Returns
    -------
    What ``main`` returns.
    """
    try:
        return main(*args, **kwargs)
    except USER_ERRORS as error:
        if os.environ.get(DEBUG_VARIABLE, "") not in ("", "0"):
            raise
        program = os.path.basename(sys.argv[0]) or "speechbrain-mowe"
        print(f"{program}: error: {one_line(error)} ({type(error).__name__}; "
              f"{DEBUG_VARIABLE}=1 shows the traceback)", file=sys.stderr)  # fmt: skip
        sys.exit(1)
