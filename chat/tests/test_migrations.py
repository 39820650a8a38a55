import pytest
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor

from chat.models import Room

BEFORE = [("chat", "0004_moderators_group")]
AFTER = [("chat", "0005_room_name_unique_ignoring_case")]


@pytest.mark.django_db
def test_the_database_refuses_a_room_name_taken_in_another_case():
    # What a creation racing another's check meets (the check itself is room_create's).
    Room.objects.create(name="lounge")
    with pytest.raises(IntegrityError), transaction.atomic():
        Room.objects.create(name="Lounge")


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_migration_renames_rooms_named_alike_and_keeps_the_oldest_name(capsys):
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    old_room = executor.loader.project_state(BEFORE).apps.get_model("chat", "Room")
    first = old_room.objects.create(name="chat")
    second = old_room.objects.create(name="Chat")
    third = old_room.objects.create(name="x" * 48 + "AT")  # the id cut into its end
    fourth = old_room.objects.create(name="x" * 48 + "at")
    taken = old_room.objects.create(name=f"CHAT-{second.pk}")  # the name "Chat" would get, in another case
    ids = [first.pk, second.pk, third.pk, fourth.pk, taken.pk]
    try:
        executor = MigrationExecutor(connection)
        executor.migrate(AFTER)
        names = dict(Room.objects.filter(pk__in=ids).values_list("pk", "name"))
        suffix = f"-{fourth.pk}"
        assert names == {
            first.pk: "chat",
            second.pk: f"Chat-{second.pk}-1",
            third.pk: "x" * 48 + "AT",
            fourth.pk: ("x" * 48 + "at")[: 50 - len(suffix)] + suffix,
            taken.pk: f"CHAT-{second.pk}",
        }
        assert f"Room 'Chat' (id {second.pk}) renamed 'Chat-{second.pk}-1'" in capsys.readouterr().out
    finally:
        Room.objects.filter(pk__in=ids).delete()
        MigrationExecutor(connection).migrate(executor.loader.graph.leaf_nodes())
