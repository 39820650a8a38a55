from rest_framework import serializers
from rest_framework.fields import empty


class StrictCharField(serializers.CharField):
    """A CharField that refuses numbers, booleans and other non-strings instead of coercing them."""

    default_error_messages = {"invalid": "Must be a string."}

    def __init__(self, **kwargs):
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class DigitsField(serializers.IntegerField):
    """A query parameter written as plain digits, as the schema says: "5.0", "+5", " 5", fullwidth or
    other scripts' digits and an empty value (DRF took it for "not given") are refused, not read as 5."""

    def get_value(self, dictionary):
        if self.field_name in dictionary:  # "" too: given, and not a number
            return dictionary.get(self.field_name)  # the last, as Django's QueryDict gives it
        return empty

    def to_internal_value(self, data):
        digits = data[1:] if isinstance(data, str) and data.startswith("-") else data  # below the bound: said so
        if (
            isinstance(data, str)
            and len(data) <= self.MAX_STRING_LENGTH
            and not (digits.isascii() and digits.isdigit())
        ):
            self.fail("invalid")
        return super().to_internal_value(data)
