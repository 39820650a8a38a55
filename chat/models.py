from django.conf import settings
from django.db import models
from django.db.models import Q


class Room(models.Model):
    name = models.SlugField(max_length=50, unique=True)
    title = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # The seq of the room's newest message. Incremented under this row's lock inside the
    # insert transaction, so seq is gapless and unique per room in commit order.
    last_seq = models.BigIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return self.name


class Message(models.Model):
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="messages")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="messages")
    content = models.TextField()
    created = models.DateTimeField(auto_now_add=True, db_index=True)
    client_id = models.CharField(max_length=64, null=True, blank=True)
    seq = models.BigIntegerField()

    class Meta:
        ordering = ["room", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["room", "seq"], name="chat_message_room_seq_unique"),
            models.UniqueConstraint(
                fields=["user", "room", "client_id"],
                condition=Q(client_id__isnull=False),
                name="chat_message_user_room_client_id_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.room.name}#{self.seq}"
