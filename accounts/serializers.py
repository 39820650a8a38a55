from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from accounts.models import User
from accounts.services import username_is_taken
from chatproject.fields import StrictCharField


class RegisterSerializer(serializers.Serializer):
    username = StrictCharField(max_length=150, validators=[User.username_validator])
    password = StrictCharField(write_only=True, max_length=4096, style={"input_type": "password"})

    def validate_username(self, value: str) -> str:
        if username_is_taken(value):
            raise serializers.ValidationError("A user with that username already exists.")
        return value


class UserSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    username = serializers.CharField(read_only=True)


class MeSerializer(UserSerializer):
    date_joined = serializers.DateTimeField(read_only=True)


@extend_schema_field({"type": "string", "enum": ["password"]})
class GrantTypeField(StrictCharField):
    """Only "password"; any other value is refused with the field's own message."""


class TokenRequestSerializer(serializers.Serializer):
    grant_type = GrantTypeField(required=False)
    username = StrictCharField(max_length=150)
    password = StrictCharField(max_length=4096, style={"input_type": "password"})

    def validate_grant_type(self, value: str) -> str:
        if value != "password":
            raise serializers.ValidationError('Unsupported grant type; only "password" is accepted.')
        return value


class TokenResponseSerializer(serializers.Serializer):
    access_token = serializers.CharField()
    refresh_token = serializers.CharField()
    token_type = serializers.ChoiceField(choices=["bearer"])
    expires_in = serializers.IntegerField(help_text="Seconds until the access token expires.")


class RefreshTokenSerializer(serializers.Serializer):
    refresh_token = StrictCharField(max_length=4096)


class WsTicketSerializer(serializers.Serializer):
    ticket = serializers.CharField()
    expires_in = serializers.IntegerField(help_text="Seconds the ticket stays valid.")
