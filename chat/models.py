import re

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower

# What a room's name can be (Room.name: a slug of at most 50 characters). Anything else names no
# room, and is not sent to the database (PostgreSQL refuses text with a NUL in it).
ROOM_NAME_PATTERN = r"[-a-zA-Z0-9_]{1,50}"
ROOM_NAME = re.compile(ROOM_NAME_PATTERN)  # fullmatch it


class Room(models.Model):
    name = models.SlugField(max_length=50, unique=True)
    title = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # The seq of the room's newest message. Incremented under this row's lock inside the
    # insert transaction, so seq is gapless and unique per room in commit order.
    last_seq = models.BigIntegerField(default=0, editable=False)
    # Archived rooms keep their history readable but accept no new message.
    archived_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            # Names are unique ignoring case, also between two creations at the same moment.
            models.UniqueConstraint(
                Lower("name"),
                name="chat_room_name_ci_unique",
                violation_error_message="A room with that name already exists.",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_archived(self) -> bool:
        return self.archived_at is not None


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
        # The admin filters by room and date and lists newest first.
        indexes = [models.Index(fields=["room", "created"], name="chat_message_room_created_idx")]

    def __str__(self) -> str:
        return f"{self.room.name}#{self.seq}"


class Mute(models.Model):
    """A user may not post in a room until `until`."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="mutes")
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="mutes")
    until = models.DateTimeField()
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created"]
        indexes = [models.Index(fields=["user", "room", "until"], name="chat_mute_user_room_until_idx")]
        permissions = [("mute_user", "Can mute a user in a room")]

    def __str__(self) -> str:
        return f"{self.user} in {self.room} until {self.until:%Y-%m-%d %H:%M}"


class AuditEntry(models.Model):
    """One moderator or operator action: who did what to which target, and when."""

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    action = models.CharField(max_length=50)
    target_type = models.CharField(max_length=50)
    target_id = models.CharField(max_length=64)
    target_repr = models.CharField(max_length=200)
    detail = models.JSONField(default=dict, blank=True)
    created = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created", "-id"]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.actor or 'system'} {self.action} {self.target_type} {self.target_repr}"
