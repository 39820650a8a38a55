import django.db.models.functions.text
from django.db import migrations, models


def rename_rooms_named_alike(apps, schema_editor):
    """Before names were unique ignoring case in the database, two creations at the same moment could
    both pass the check ("Chat" and "chat"). The oldest room keeps its name; each later one gets its id
    appended ("chat-12"), and is printed, so that the constraint can be created."""
    Room = apps.get_model("chat", "Room")
    rooms = list(Room.objects.order_by("created_at", "id"))
    taken = {room.name.lower() for room in rooms}  # no new name may be any room's, in any case
    kept = set()
    for room in rooms:
        key = room.name.lower()
        if key not in kept:
            kept.add(key)
            continue
        suffix, n = f"-{room.pk}", 1
        while (new_name := room.name[: 50 - len(suffix)] + suffix).lower() in taken:
            suffix, n = f"-{room.pk}-{n}", n + 1
        print(f"\n  Room {room.name!r} (id {room.pk}) renamed {new_name!r}: another room has that name in another case.")
        room.name = new_name
        room.save(update_fields=["name"])
        taken.add(new_name.lower())


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
