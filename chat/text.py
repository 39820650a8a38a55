"""What a text shows when rendered."""

import unicodedata

# Characters that draw nothing although they are letters or symbols: the Hangul fillers and the blank
# Braille pattern, the usual ways around a "message is empty" check; the variation selectors and the
# combining grapheme joiner, which only change the character before them.
_BLANK_MARKS = frozenset("\u115f\u1160\u3164\uffa0\u2800\u034f" + "".join(map(chr, range(0xFE00, 0xFE10))))
_INVISIBLE_CATEGORIES = frozenset(("Cc", "Cf", "Zs", "Zl", "Zp"))
# Format characters that are drawn all the same: the prepended concatenation marks (Arabic number
# and year signs, the end of ayah, the Syriac abbreviation mark, the Kaithi number signs).
_VISIBLE_FORMAT = frozenset("\u0600\u0601\u0602\u0603\u0604\u0605\u06dd\u070f\u0890\u0891\u08e2\U000110bd\U000110cd")


def _invisible(char: str) -> bool:
    return (
        char.isspace()
        or char in _BLANK_MARKS
        or 0xE0100 <= ord(char) <= 0xE01EF  # the supplementary variation selectors
        or (unicodedata.category(char) in _INVISIBLE_CATEGORIES and char not in _VISIBLE_FORMAT)
    )


def is_blank(text: str) -> bool:
    """True when `text` would render as nothing: whitespace, zero-width and format characters only.

    It stops at the first visible character, so a message costs a character or two to check.
    """
    return all(_invisible(char) for char in text)


# Vietnamese stacks two or three marks on a letter, some scripts a few more; "Zalgo" text stacks
# hundreds, drawn over the lines above and below it.
MAX_STACKED_MARKS = 8


def has_stacked_marks(text: str) -> bool:
    """True when some character carries more than MAX_STACKED_MARKS combining marks."""
    run = 0
    for char in text:
        run = run + 1 if unicodedata.category(char) in ("Mn", "Me") else 0
        if run > MAX_STACKED_MARKS:
            return True
    return False
