"""A password hasher a test can hold from another process (test_server_hashing.py).

While the file $HASHING_GATE_DIR/closed exists, every hash touches $HASHING_GATE_DIR/entered and waits.
"""

import os
import time
from pathlib import Path

from django.contrib.auth.hashers import PBKDF2PasswordHasher

HOLD_AT_MOST_SECONDS = 60.0


class GatedPasswordHasher(PBKDF2PasswordHasher):
    def encode(self, password, salt, iterations=None):
        gate = Path(os.environ["HASHING_GATE_DIR"])
        if (gate / "closed").exists():
            (gate / "entered").touch()
            deadline = time.monotonic() + HOLD_AT_MOST_SECONDS
            while (gate / "closed").exists() and time.monotonic() < deadline:
                time.sleep(0.01)
        return super().encode(password, salt, iterations)
