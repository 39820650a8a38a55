"""The server's settings with a password hasher a test can hold (accounts/tests/gated_hasher.py)."""

from chatproject.settings import *  # noqa: F403

PASSWORD_HASHERS = ["accounts.tests.gated_hasher.GatedPasswordHasher"]
