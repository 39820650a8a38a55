from chat.tests.factories import make_message


def test_message_create_numbers_messages(general, user, auth_client):
    first = make_message(room=general, user=user, content="one")
    second = make_message(room=general, user=user, content="two")
    assert (first.seq, second.seq) == (1, 2)
    response = auth_client.get("/messages/general")
    assert [m["content"] for m in response.json()] == ["two", "one"]
