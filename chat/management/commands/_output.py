"""Commands that print a line per message end quietly when the reader of their output goes away.

Python ignores SIGPIPE, so `manage.py export_messages general | head -1` would get BrokenPipeError on
its next write once head exits, print a traceback and exit with status 1 (and report the failed flush
of stdout once more at exit).
"""

import contextlib
import os
import sys
from collections.abc import Iterator

# What a process killed by SIGPIPE ends with in the shell (128 + 13), as `cat`, `seq` or `grep` do when
# their reader goes away: a pipeline's status is its last command's (head's), and a `set -o pipefail`
# script still learns that this output was cut short.
READER_GONE_STATUS = 141


@contextlib.contextmanager
def until_the_reader_goes(stdout) -> Iterator[None]:
    """Run the block and flush `stdout` (a command's); if its reader has gone, exit with status 141, silently."""
    try:
        yield
        stdout.flush()  # output still buffered fails here, not in the interpreter's exit
    except BrokenPipeError:
        # The interpreter flushes stdout again at exit: point it at /dev/null, as Python's documentation
        # of SIGPIPE advises, so that flush cannot fail and be reported too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(READER_GONE_STATUS)
