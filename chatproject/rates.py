"""Rate syntax, without Django's cache: the settings check every rate with it when they are read.

A rate reads `<count>/<period>`, the period `s`, `min` or `h` with an optional number in front
(`10/min`, `20/10s`, `1000/h`); `0` disables the limit.
"""

import re
from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*(s|min|h)\s*$")
_UNIT_SECONDS = {"s": 1, "min": 60, "h": 3600}
FORMAT = "<count>/<period>, the period s, min or h with an optional number in front (10/min, 20/10s, 1000/h), or 0"


@dataclass(frozen=True)
class Rate:
    count: int
    seconds: int


def parse_rate(text: str, *, name: str = "rate") -> Rate | None:
    """Return the rate, or None when the limit is disabled ("0"); `name` is the setting, for the error."""
    if text.strip() == "0":
        return None
    match = _RATE.match(text)
    if not match:
        raise ImproperlyConfigured(f"Bad {name} {text!r}: use {FORMAT}.")
    count, multiple, unit = int(match[1]), int(match[2] or 1), match[3]
    if count == 0:
        return None
    if multiple == 0:
        raise ImproperlyConfigured(f"Bad {name} {text!r}: the period cannot be zero; use {FORMAT}.")
    return Rate(count=count, seconds=multiple * _UNIT_SECONDS[unit])
