import factory

from accounts.tests.factories import UserFactory
from chat.models import Room
from chat.services import message_create


class RoomFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Room
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"room-{n}")
    title = factory.LazyAttribute(lambda room: room.name.title())


def make_message(*, room, user=None, content="hello", client_id=None):
    """Create a message the way the product does: through the service, with a real seq."""
    return message_create(room=room, user=user or UserFactory(), content=content, client_id=client_id).message
