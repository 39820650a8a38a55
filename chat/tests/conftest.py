"""Fixtures of the WebSocket tests: users, the channel layer, communicators on the real application."""

import pytest
from channels.layers import get_channel_layer

from accounts.tests.factories import UserFactory
from chat.tests.communicator import Communicator
from chatproject.asgi import application


@pytest.fixture
async def channel_layer():
    layer = get_channel_layer()
    await layer.flush()
    yield layer
    await layer.flush()


@pytest.fixture
def alice(transactional_db):
    return UserFactory(username="alice")


@pytest.fixture
def bob(transactional_db):
    return UserFactory(username="bob")


@pytest.fixture
def carol(transactional_db):
    return UserFactory(username="carol")


@pytest.fixture
async def sockets(channel_layer):
    """Open communicators on the real application; each is disconnected at teardown.

    Teardown re-raises anything the application raised, so a consumer crash (a 1011 in a
    real server) fails the test even when the test did not read the output.
    """
    opened: list[Communicator] = []

    def open_socket(path: str, headers=None) -> Communicator:
        communicator = Communicator(application, path, headers=headers)
        opened.append(communicator)
        return communicator

    yield open_socket
    for communicator in opened:
        if not communicator.disconnected:
            await communicator.disconnect()
