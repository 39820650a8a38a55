from django.contrib.auth.management import create_permissions
from django.db import migrations

MODERATOR_PERMISSIONS = [
    ("accounts", "user", "view_user"),
    ("accounts", "user", "ban_user"),
    ("chat", "message", "view_message"),
    ("chat", "message", "delete_message"),
    ("chat", "room", "add_room"),
    ("chat", "room", "change_room"),
    ("chat", "mute", "mute_user"),
]


def create_moderators(apps, schema_editor):
    # Permissions are normally created after the whole migrate run; this group needs them now.
    for app_label in ("accounts", "chat"):
        app_config = apps.get_app_config(app_label)
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name="Moderators")
    group.permissions.set(
        [
            Permission.objects.get(content_type__app_label=app, content_type__model=model, codename=codename)
            for app, model, codename in MODERATOR_PERMISSIONS
        ]
    )


def delete_moderators(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name="Moderators").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("accounts", "0002_alter_user_options"),
        ("chat", "0003_auditentry_mute_room_archived_at_and_more"),
    ]

    operations = [migrations.RunPython(create_moderators, delete_moderators)]
