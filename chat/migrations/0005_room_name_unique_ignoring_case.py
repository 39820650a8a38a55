import django.db.models.functions.text
from django.db import migrations, models


def rename_rooms_named_alike(apps, schema_editor):
    """Before names were unique ignoring case in the database, two creations at the same moment could
    both pass the check ("Chat" and "chat"). The oldest room keeps its name; each later one gets its id
    appended ("chat-12"), and is printed, so that the constraint can be created."""
    Room = apps.get_model("chat", "Room")
    seen = set()
    for room in Room.objects.order_by("created_at", "id"):
        key = room.name.lower()
        if key not in seen:
            seen.add(key)
            continue
        suffix = f"-{room.pk}"
        new_name = room.name[: 50 - len(suffix)] + suffix
        print(f"\n  Room {room.name!r} (id {room.pk}) renamed {new_name!r}: another room has that name in another case.")
        room.name = new_name
        room.save(update_fields=["name"])
        seen.add(new_name.lower())


class Migration(migrations.Migration):

    dependencies = [
        ("chat", "0004_moderators_group"),
    ]

    operations = [
        migrations.RunPython(rename_rooms_named_alike, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="room",
            constraint=models.UniqueConstraint(
                django.db.models.functions.text.Lower("name"),
                name="chat_room_name_ci_unique",
                violation_error_message="A room with that name already exists.",
            ),
        ),
    ]
