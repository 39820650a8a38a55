from rest_framework import serializers

from accounts.serializers import UserSerializer


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
    """Input of POST /messages/{room}; content and client_id are checked by chat.services."""

    content = serializers.JSONField(help_text="The text; not empty, at most CHAT_MAX_MESSAGE_LENGTH characters.")
    client_id = serializers.JSONField(
        required=False, allow_null=True, help_text="1-64 characters; the same value again returns the original."
    )


class MessageListQuerySerializer(serializers.Serializer):
    limit = serializers.IntegerField(min_value=1, max_value=100, default=50)
    skip = serializers.IntegerField(min_value=0, max_value=10**9, default=0)
    before = serializers.IntegerField(min_value=0, max_value=2**62, required=False)
    after = serializers.IntegerField(min_value=0, max_value=2**62, required=False)


class RoomSerializer(serializers.Serializer):
    name = serializers.SlugField()
    title = serializers.CharField()
    online = serializers.IntegerField(help_text="Distinct users connected to the room now.")


class RoomListSerializer(serializers.Serializer):
    rooms = RoomSerializer(many=True)


class HealthSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["ok", "unavailable"])
    database = serializers.ChoiceField(choices=["ok", "unavailable"])
    channel_layer = serializers.ChoiceField(choices=["ok", "unavailable"])
