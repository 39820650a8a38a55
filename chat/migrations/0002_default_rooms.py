from django.db import migrations

DEFAULT_ROOMS = [
    ("general", "General"),
    ("python", "Python"),
    ("frontend", "Frontend"),
    ("random", "Random"),
]


def create_rooms(apps, schema_editor):
    Room = apps.get_model("chat", "Room")
    for name, title in DEFAULT_ROOMS:
        Room.objects.get_or_create(name=name, defaults={"title": title})


def remove_rooms(apps, schema_editor):
    Room = apps.get_model("chat", "Room")
    Room.objects.filter(name__in=[name for name, _ in DEFAULT_ROOMS], last_seq=0).delete()


class Migration(migrations.Migration):
    dependencies = [("chat", "0001_initial")]
    operations = [migrations.RunPython(create_rooms, remove_rooms)]
