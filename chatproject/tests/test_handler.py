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

from chatproject.handler import PooledASGIHandler


def where(request):
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"thread": threading.current_thread().name, "connection": id(connection.connection)})


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
    return PooledASGIHandler()


async def get(handler, path: str) -> tuple[int, dict]:
    response = await HttpCommunicator(handler, "GET", path).get_response(timeout=10)
    return response["status"], json.loads(response["body"])


@pytest.mark.django_db(transaction=True)
async def test_requests_run_on_a_request_thread_that_keeps_its_connection(handler):
    first = await get(handler, "/where")
    second = await get(handler, "/where")

    assert first[0] == second[0] == 200
    assert first[1]["thread"].startswith("http")
    assert first[1]["thread"] != threading.current_thread().name
    assert second[1]["thread"] == first[1]["thread"]
    if connection.settings_dict["CONN_MAX_AGE"] is None:  # SQLite: the thread keeps the one it opened
        assert second[1]["connection"] == first[1]["connection"]


def test_the_middleware_chain_is_one_synchronous_call(handler):
    assert not asyncio.iscoroutinefunction(handler._middleware_chain)


@pytest.mark.django_db(transaction=True)
async def test_an_async_view_still_answers(handler):
    assert await get(handler, "/async") == (200, {"async": True})


@pytest.mark.django_db(transaction=True)
async def test_async_to_sync_in_a_view_runs_on_the_serving_event_loop(handler):
    # A view that publishes to the in-process channel layer must reach the loop its sockets live on.
    status, body = await get(handler, "/loop")

    assert status == 200
    assert body["loop"] == id(asyncio.get_running_loop())


@pytest.mark.django_db(transaction=True)
async def test_an_error_in_a_view_is_a_json_500_and_the_next_request_is_served(handler):
    status, body = await get(handler, "/broken")
    assert status == 500
    assert "detail" in body

    assert (await get(handler, "/where"))[0] == 200
