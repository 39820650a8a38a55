"""Request body parsers: DRF's, with every malformed body answered 400."""

from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    """DRF's JSONParser, which answers ValueError (bad syntax, an integer past Python's 4300 digits)
    with 400 but lets a RecursionError through (JSON nested about a thousand deep): a 500. Any
    nesting the decoder cannot follow is malformed JSON too."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply.") from None
