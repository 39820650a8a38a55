"""chatproject.handler: one synchronous chain per request, on request threads that keep their connection."""

import asyncio
import json
import threading

import pytest
from asgiref.sync import async_to_sync
from channels.testing import HttpCommunicator
from django.db import connection
from django.http import JsonResponse
from django.urls import include, path

from accounts.services import _hashing_slots
from chatproject.handler import PooledASGIHandler

seen_connections = []  # the objects themselves: a closed one's id() may be reused by its successor


def where(request):
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    seen_connections.append(connection.connection)
    return JsonResponse({"thread": threading.current_thread().name})


async def async_view(request):
    await asyncio.sleep(0)
    return JsonResponse({"async": True})


def loop_of_async_to_sync(request):
    async def running_loop() -> int:
        return id(asyncio.get_running_loop())

    return JsonResponse({"loop": async_to_sync(running_loop)()})


def broken(request):
    raise RuntimeError("boom")


urlpatterns = [
    path("where", where),
    path("async", async_view),
    path("loop", loop_of_async_to_sync),
    path("broken", broken),
    path("", include("chatproject.urls")),  # the error middleware looks up the admin's address
]


@pytest.fixture
def handler(settings):
    settings.ROOT_URLCONF = __name__
    settings.HTTP_THREADS = 1
    settings.ALLOWED_HOSTS = ["*"]
    seen_connections.clear()
    handler = PooledASGIHandler()
    yield handler
    handler.threads.shutdown()


async def get(handler, path: str) -> tuple[int, dict]:
    response = await HttpCommunicator(handler, "GET", path).get_response(timeout=10)
    return response["status"], json.loads(response["body"])


# Every transactional test of the suite restores the migrated data (serialized_rollback): one that did
# not would let Django's post-migrate signal re-create the content types after its flush, and the next
# serialized test, in whatever order the tests run, would fail to load them again.
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
async def test_requests_run_on_a_request_thread_that_keeps_its_connection(handler):
    first = await get(handler, "/where")
    second = await get(handler, "/where")

    assert first[0] == second[0] == 200
    assert first[1]["thread"].startswith("http")
    assert first[1]["thread"] != threading.current_thread().name
    assert second[1]["thread"] == first[1]["thread"]
    if connection.settings_dict["CONN_MAX_AGE"] is None:  # SQLite: the thread keeps the one it opened
        assert seen_connections[1] is seen_connections[0]
    else:  # PostgreSQL: taken from the pool for the request and given back
        assert seen_connections[1].closed or seen_connections[1] is not seen_connections[0]


def test_the_middleware_chain_is_one_synchronous_call(handler):
    assert not asyncio.iscoroutinefunction(handler._middleware_chain)


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
async def test_an_async_view_still_answers(handler):
    assert await get(handler, "/async") == (200, {"async": True})


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
async def test_async_to_sync_in_a_view_runs_on_the_serving_event_loop(handler):
    # A view that publishes to the in-process channel layer must reach the loop its sockets live on.
    status, body = await get(handler, "/loop")

    assert status == 200
    assert body["loop"] == id(asyncio.get_running_loop())


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
async def test_an_error_in_a_view_is_a_json_500_and_the_next_request_is_served(handler):
    status, body = await get(handler, "/broken")
    assert status == 500
    assert "detail" in body

    assert (await get(handler, "/where"))[0] == 200


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
async def test_a_login_waiting_for_a_hashing_slot_leaves_the_request_threads_free(handler, settings):
    settings.PASSWORD_HASH_CONCURRENCY = 1
    slots = _hashing_slots(1)
    slots.acquire()  # every slot busy: the login waits inside its view
    try:
        body = b'{"username": "nobody", "password": "not-a-password"}'
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        login = asyncio.ensure_future(
            HttpCommunicator(handler, "POST", "/token", body=body, headers=headers).get_response(timeout=10)
        )
        await asyncio.sleep(0.3)
        assert not login.done()

        # The only request thread (HTTP_THREADS=1) is free for everything else meanwhile.
        assert (await get(handler, "/where"))[0] == 200
    finally:
        slots.release()
    assert (await login)["status"] == 401
