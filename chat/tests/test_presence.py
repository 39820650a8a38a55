"""InProcessPresence: the store of a single server process (RedisPresence: test_presence_redis.py)."""

from chat.presence import InProcessPresence


def connect(presence, user_id, channel, room_id):
    return presence.connect(
        room_id=room_id, room_name=f"room{room_id}", user_id=user_id, username=f"u{user_id}", channel=channel
    )


async def test_first_and_last_socket_of_a_user_in_a_room_are_reported():
    presence = InProcessPresence()

    assert await connect(presence, 1, "a", room_id=1) is True
    assert await connect(presence, 1, "b", room_id=1) is False
    assert await connect(presence, 1, "c", room_id=2) is True
    assert await presence.users(room_id=1) == [{"id": 1, "username": "u1"}]
    assert presence.online_counts([1, 2, 3]) == {1: 1, 2: 1, 3: 0}

    assert await presence.disconnect(room_id=1, user_id=1, channel="a") is False
    assert await presence.disconnect(room_id=1, user_id=1, channel="b") is True
    assert await presence.disconnect(room_id=1, user_id=1, channel="b") is False  # only once
    assert await presence.users(room_id=1) == []
    assert await presence.users(room_id=2) == [{"id": 1, "username": "u1"}]


async def test_nothing_is_kept_of_users_and_rooms_once_their_last_socket_closed():
    presence = InProcessPresence()
    for n in range(200):
        await connect(presence, n % 50, f"s{n}", room_id=n % 70)
    await connect(presence, 7, "stays", room_id=3)
    for n in range(200):
        await presence.disconnect(room_id=n % 70, user_id=n % 50, channel=f"s{n}")
    await presence.disconnect(room_id=1, user_id=999, channel="never-connected")
    assert await presence.users(room_id=3) == [{"id": 7, "username": "u7"}]
    assert (presence._sockets, presence._user_sockets, presence._usernames) == (
        {3: {7: {"stays"}}},
        {7: {"stays"}},
        {7: "u7"},
    )

    await presence.disconnect(room_id=3, user_id=7, channel="stays")
    assert (presence._sockets, presence._user_sockets, presence._usernames) == ({}, {}, {})
