from django.conf import settings
from rest_framework import serializers

from accounts.serializers import UserSerializer
from chat.models import ROOM_NAME_PATTERN
from chat.services import CLIENT_ID_MAX_LENGTH
from chatproject.fields import DigitsField, StrictCharField


class MessageSerializer(serializers.Serializer):
    """Schema of the message object; the object itself is built by chat.events.message_payload."""

    id = serializers.IntegerField()
    seq = serializers.IntegerField(help_text="Per-room sequence: gapless, strictly increasing in commit order.")
    room = serializers.CharField()
    user = UserSerializer()
    content = serializers.CharField()
    timestamp = serializers.DateTimeField()
    client_id = serializers.CharField(allow_null=True)


class MessageCreateSerializer(serializers.Serializer):
    """Schema of the input of POST /messages/{room}; chat.services checks content and client_id."""

    content = StrictCharField(
        max_length=settings.CHAT_MAX_MESSAGE_LENGTH,
        help_text="The text: not blank (only whitespace or characters that show nothing), at most "
        "CHAT_MAX_MESSAGE_LENGTH characters, no NUL.",
    )
    client_id = StrictCharField(
        required=False,
        allow_null=True,
        min_length=1,
        max_length=CLIENT_ID_MAX_LENGTH,
        help_text="Makes the send idempotent: the same value again returns the original message.",
    )


class MessageListQuerySerializer(serializers.Serializer):
    limit = DigitsField(min_value=1, max_value=100, default=50)
    skip = DigitsField(min_value=0, max_value=10**9, default=0)
    before = DigitsField(min_value=0, max_value=2**62, required=False)
    after = DigitsField(min_value=0, max_value=2**62, required=False)


class RoomSerializer(serializers.Serializer):
    name = serializers.SlugField()
    title = serializers.CharField()
    online = serializers.IntegerField(help_text="Distinct users connected to the room now.")
    archived = serializers.BooleanField(
        help_text="Read-only: its history stays readable; sends get the error `archived`, REST POST 403."
    )


class RoomCreateSerializer(serializers.Serializer):
    """Input of POST /rooms; checked by chat.services.room_create."""

    # The schema's pattern; chat.services.room_create checks the whole name (no trailing newline either).
    name = serializers.RegexField(rf"^{ROOM_NAME_PATTERN}$", help_text="A slug: letters, digits, - and _.")
    title = serializers.CharField(required=False, allow_blank=True, allow_null=True, max_length=200)  # null: no title


class RoomListSerializer(serializers.Serializer):
    rooms = RoomSerializer(many=True)


class HealthSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["ok", "unavailable"])
    database = serializers.ChoiceField(choices=["ok", "unavailable"])
    channel_layer = serializers.ChoiceField(choices=["ok", "unavailable"])
