"""Request body parsers: DRF's, with every malformed body answered 400."""

import io
from urllib.parse import parse_qsl

from django.conf import settings
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


class FormParser(parsers.FormParser):
    """DRF's FormParser, which decodes a value that is not text in the body's charset (UTF-8 unless
    it names another) with replacement characters: `h%FFllo` was stored as "h\ufffdllo". Such a body is
    malformed, as the same bytes in JSON are."""

    def parse(self, stream, media_type=None, parser_context=None):
        body = stream.read()
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            parse_qsl(
                body.decode(encoding),
                keep_blank_values=True,
                encoding=encoding,
                errors="strict",
                max_num_fields=settings.DATA_UPLOAD_MAX_NUMBER_FIELDS,
            )
        except (UnicodeDecodeError, LookupError):
            raise ParseError(f"Form parse error - not {encoding} text.") from None
        except ValueError:
            pass  # too many fields: Django's QueryDict refuses them below, as it always has
        return super().parse(io.BytesIO(body), media_type, parser_context)
