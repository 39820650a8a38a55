"""The Django side of test_million_rows, run in a process of its own on the test's PostgreSQL database.

    DATABASE_URL=postgres://... python -m integration.million_rows seed
    DATABASE_URL=postgres://... python -m integration.million_rows admin
    DATABASE_URL=postgres://... python -m integration.million_rows batch
    DATABASE_URL=postgres://... python -m integration.million_rows history

`seed` makes the users and rooms with the ORM and the messages with one INSERT ... SELECT over
generate_series (the ORM would take minutes for a million rows), then ANALYZE. `admin` loads the
message changelist as a moderator through Django's test client, capturing every query. `batch`
stores one group-commit batch, some of its client_ids repeats of seeded messages, and rolls it back.
`history` reads pages of the big room's history with selectors.message_list and explains each query.
Each prints one JSON object on stdout for the test to check.
"""

import contextlib
import json
import os
import sys
from datetime import timedelta

BIG, SMALL = "big", "small"
BIG_MESSAGES, SMALL_MESSAGES = 1_000_000, 10_000
USERS = 10
# The big room has a message a second, the newest at seeding time; the small room's are this much
# older, so the newest messages overall are the big room's.
SMALL_ROOM_AGE = timedelta(days=20)
DATE_RANGE_ENDS_BEFORE_NEWEST = timedelta(days=2)
PAGE_SIZE = 100  # the admin's list_per_page
# A group-commit batch: sends repeating the client_ids of these seeded messages of the big room,
# then new ones alternating between the big and the small room; the author of the new send
# MUTED_SEND is muted in the small room.
REPEATED_SEQS = (1, 500_000, BIG_MESSAGES)
BATCH_NEW = 24
MUTED_SEND = 1

# Every message carries a client_id, as clients send them: the unique index on (user, room,
# client_id) then holds a million entries, and a batch's lookup of repeats must probe it.
INSERT_MESSAGES = """
INSERT INTO chat_message (room_id, user_id, content, created, client_id, seq)
SELECT %(room)s, (%(users)s::bigint[])[1 + i %% %(user_count)s], %(prefix)s || i,
       %(start)s + i * interval '1 second', 'seed-' || i, i
FROM generate_series(1, %(count)s) AS i
"""


def seed() -> dict:
    """A moderator, USERS authors, and the big and small rooms with their messages (seq 1..n)."""
    from django.contrib.auth.models import Group
    from django.db import connection, transaction
    from django.utils import timezone

    from accounts.models import User
    from chat.models import Message, Room

    now = timezone.now()
    with transaction.atomic():
        moderator = User.objects.create_user("moderator", password=None, is_staff=True)
        moderator.groups.add(Group.objects.get(name="Moderators"))
        authors = User.objects.bulk_create(User(username=f"user{i}") for i in range(USERS))
        plan = [
            (Room.objects.create(name=BIG), BIG_MESSAGES, "message ", now - timedelta(seconds=BIG_MESSAGES)),
            (Room.objects.create(name=SMALL), SMALL_MESSAGES, "small ", now - SMALL_ROOM_AGE),
        ]
        with connection.cursor() as cursor:
            for room, count, prefix, start in plan:
                cursor.execute(
                    INSERT_MESSAGES,
                    {
                        "room": room.pk,
                        "users": [u.pk for u in authors],
                        "user_count": USERS,
                        "prefix": prefix,
                        "start": start,
                        "count": count,
                    },
                )
                Room.objects.filter(pk=room.pk).update(last_seq=count)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return {"messages": Message.objects.count()}


# --- statements as sent, and their plans -------------------------------------------------------


@contextlib.contextmanager
def statements_sent():
    """The statements Django sends inside the block, each as (text, parameters) as it was sent."""
    from django.db import connection

    sent = []

    def record(execute, statement, params, many, context):
        sent.append((statement, params))
        return execute(statement, params, many, context)

    with connection.execute_wrapper(record):
        yield sent


def explained(explain: str, statement: str, params, *, server_binding: bool = False) -> str:
    """The plan PostgreSQL gives for `statement` with its parameters (`explain`: EXPLAIN [ANALYZE])."""
    from chat import sql

    return "\n".join(row[0] for row in sql.rows(f"{explain} {statement}", params, server_binding=server_binding))


# --- the admin changelist ----------------------------------------------------------------------


def admin_cases() -> dict[str, dict]:
    """Query strings of the message changelist: every filter, the searches, and facets asked for."""
    from chat.models import Message, Room

    big, small = Room.objects.get(name=BIG), Room.objects.get(name=SMALL)
    newest = Message.objects.get(room=big, seq=BIG_MESSAGES).created
    return {
        "plain": {},
        "room big": {"room__id__exact": big.pk},
        "room small": {"room__id__exact": small.pk},
        # Its last page, seqs 100 to 1, is past the planner's estimate whenever that falls short.
        "room small last page": {"room__id__exact": small.pk, "p": SMALL_MESSAGES // PAGE_SIZE},
        # Past any estimate and the real end: an empty page, not an error, since the end is not known.
        "room small past the end": {"room__id__exact": small.pk, "p": 10 * SMALL_MESSAGES // PAGE_SIZE},
        # DateFieldListFilter's own parameters: three days of the big room, ending two days ago.
        "date range": {
            "created__gte": (newest - timedelta(days=5)).isoformat(),
            "created__lt": (newest - DATE_RANGE_ENDS_BEFORE_NEWEST).isoformat(),
        },
        "search username": {"q": "user3"},
        # Matches every message of the big room, where the planner expects a few hundred at most.
        "search content": {"q": "message"},
        "facets asked for": {"_facets": "True"},
    }


def admin_page(client, params: dict) -> dict:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from chat.paginators import planner_rows

    with CaptureQueriesContext(connection) as captured:
        response = client.get("/admin/chat/message/", params)
    cl = response.context["cl"]
    shown = [[m.room.name, m.seq, m.user.username, m.content] for m in cl.result_list]
    return {
        "status": response.status_code,
        "shown": shown,
        "result_count": cl.result_count,
        "estimated": cl.paginator.is_estimate,
        "planner_rows": planner_rows(cl.queryset),
        "message_queries": [q["sql"] for q in captured.captured_queries if "chat_message" in q["sql"]],
        "plan": cl.result_list.explain(),
    }


def admin() -> dict:
    from django.test import Client
    from django.test.utils import setup_test_environment

    from accounts.models import User

    setup_test_environment()  # the test client's host and response.context
    client = Client()
    client.force_login(User.objects.get(username="moderator"))
    return {name: admin_page(client, params) for name, params in admin_cases().items()}


# --- a group-commit batch ------------------------------------------------------------------------


def batch() -> dict:
    """One batch through services.message_create_many, rolled back: its outcomes, and the plan of the
    statement that locks the rooms and looks up repeated client_ids and mutes."""
    from django.db import transaction
    from django.utils import timezone

    from accounts.models import User
    from chat.models import Message, Mute, Room
    from chat.services import MessageForbidden, MessageRequest, message_create_many

    big, small = Room.objects.get(name=BIG), Room.objects.get(name=SMALL)
    authors = list(User.objects.filter(username__startswith="user").order_by("pk"))
    repeated = Message.objects.filter(room=big, seq__in=REPEATED_SEQS).select_related("user").order_by("seq")
    requests = [MessageRequest(room=big, user=m.user, content="again", client_id=m.client_id) for m in repeated]
    requests += [
        MessageRequest(room=(big, small)[n % 2], user=authors[n % USERS], content=f"new {n}", client_id=f"new-{n}")
        for n in range(BATCH_NEW)
    ]
    with transaction.atomic():
        muted = requests[len(REPEATED_SEQS) + MUTED_SEND]
        Mute.objects.create(user=muted.user, room=muted.room, until=timezone.now() + timedelta(hours=1))
        with statements_sent() as statements:
            outcomes = message_create_many(requests, publish=False)
        # Explained as it was sent: its text, and its values bound on the server (arrays).
        lookup, params = next((text, params) for text, params in statements if "posters(user_id, room_id)" in text)
        plan = explained("EXPLAIN", lookup, params, server_binding=True)
        transaction.set_rollback(True)

    def shown(outcome) -> list:
        if isinstance(outcome, MessageForbidden):
            return ["refused", outcome.code]
        return [outcome.created, outcome.message.room.name, outcome.message.seq, outcome.message.content]

    return {"outcomes": [shown(o) for o in outcomes], "plan": plan}


# --- a page of history --------------------------------------------------------------------------

HISTORY_PAGES = {
    "newest": {},
    "before": {"before": 500_000},
    "after": {"after": 500_000},
    "skip": {"skip": 200, "limit": 10},
}


def history() -> dict:
    """For each page of the big room: the seqs selectors.message_list read, and the plan of its query
    (captured as sent, explained with ANALYZE)."""
    from chat import selectors
    from chat.models import Room

    big = Room.objects.get(name=BIG)
    pages = {}
    for name, arguments in HISTORY_PAGES.items():
        with statements_sent() as statements:
            rows = selectors.message_list(room=big, **{"limit": 50, **arguments})
        (statement, params), *others = statements
        plan = explained("EXPLAIN ANALYZE", statement, params)
        pages[name] = {"seqs": [row["seq"] for row in rows], "statements": 1 + len(others), "plan": plan}
    return pages


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatproject.settings")
    import django

    django.setup()
    print(json.dumps({"seed": seed, "admin": admin, "batch": batch, "history": history}[sys.argv[1]]()))
