"""A Python process of its own, for what is decided when a module is imported (settings, the ASGI app)."""

import subprocess
import sys

from django.conf import settings

TIMEOUT_SECONDS = 60


def run_python(code: str, env: dict[str, str], *, check: bool = False) -> subprocess.CompletedProcess:
    """`python -c code` in the project's folder with `env` as its whole environment, output captured;
    killed (subprocess.TimeoutExpired) if it has not ended within a minute."""
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
        check=check,
    )
