"""chat.logs: WebSocket log records carry the socket's connection_id, user_id and room."""

import logging

from chat.logs import log_ws


class FakeUser:
    pk = 7


def scope(**extra) -> dict:
    return {
        "type": "websocket",
        "connection_id": "c0ffee",
        "user": FakeUser(),
        "url_route": {"args": (), "kwargs": {"room": "general"}},
        **extra,
    }


def without_time(line: dict) -> dict:
    return {key: value for key, value in line.items() if key != "time"}


def test_a_close_is_logged_with_the_sockets_ids_and_its_code(json_log):
    log_ws(scope(), "ws.close", code=4003, reason="deactivated")

    assert [without_time(line) for line in json_log.lines()] == [
        {
            "level": "INFO",
            "logger": "chat.ws",
            "event": "ws.close",
            "connection_id": "c0ffee",
            "user_id": 7,
            "room": "general",
            "code": 4003,
            "reason": "deactivated",
        }
    ]


def test_unknown_ids_are_left_out_and_fields_override_the_scope(json_log):
    log_ws({"type": "websocket", "user": None}, "ws.close", logging.WARNING, code=4001, room="lobby", user_id=None)

    assert [without_time(line) for line in json_log.lines()] == [
        {"level": "WARNING", "logger": "chat.ws", "event": "ws.close", "code": 4001, "room": "lobby"}
    ]


def test_an_exception_can_be_attached(json_log):
    try:
        raise ConnectionError("layer down")
    except ConnectionError:
        log_ws(scope(), "ws.close", logging.ERROR, exc_info=True, code=4500)

    [line] = json_log.lines()
    assert (line["level"], line["code"]) == ("ERROR", 4500)
    assert line["exception"].endswith("ConnectionError: layer down")
