"""Django's ASGI handler, run on a few request threads that keep their database connections.

Django's own ASGI handler builds an async middleware chain. Its middleware (sessions, CSRF, auth,
messages, security headers) is synchronous, so each of their hooks is a round trip from the event
loop to the request's thread and back: about a dozen per request. And that thread is a new one
for every request, so every request opened a new database connection. Here the whole chain and the
view run in one call, on one of HTTP_THREADS threads that live as long as the process; each keeps
its connection from one request to the next, checked as Django checks it at the start and end of a
request (docs/performance.md, "Levers"). Async views still work: Django runs them with async_to_sync.

The paths of HTTP_OWN_THREAD_PATHS (login and registration: they wait their turn for a password
hashing slot) run as Django runs every request, on a thread of their own, so a burst of logins never
holds the request threads that everything else needs.

A request body sent in chunks is given the Content-Length it turned out to have, as if it had been
sent with one: DRF reads nothing without it, and Django's size limit counts it.

A body within Django's in-memory limit is read before the view runs. Django's handler closes the
body's file as soon as the client disconnects, while the view goes on on its request thread: a
client that sent its request and went away (a bot timing out) made the view read a closed file,
a 500 with a traceback in the log for the client's leaving. Now the view has the body whatever the
client does, and a message so posted is stored as it would have been.

The body of a streaming response is read after the view returns, by Django, on a thread of the
request's own; none of this project's streaming responses touches the database.
"""

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.handlers.asgi import ASGIHandler
from django.db import close_old_connections, connections, reset_queries


class PooledASGIHandler(ASGIHandler):
    def __init__(self):
        self.threads = ThreadPoolExecutor(max_workers=settings.HTTP_THREADS, thread_name_prefix="http")
        self._own_thread_paths = frozenset(settings.HTTP_OWN_THREAD_PATHS)
        super().__init__()

    def load_middleware(self, is_async=False):
        super().load_middleware(is_async=False)

    def create_request(self, scope, body_file):
        request, error_response = super().create_request(scope, body_file)
        if request is not None and "CONTENT_LENGTH" not in request.META:
            # A chunked body (Transfer-Encoding: chunked) comes without a Content-Length, and DRF
            # reads no body without one: every field was "required". Django has read it all by now.
            size = body_file.seek(0, os.SEEK_END)
            body_file.seek(0)
            if size:
                request.META["CONTENT_LENGTH"] = str(size)
        if request is not None and request.META.get("CONTENT_LENGTH", "0") != "0":
            # Over DATA_UPLOAD_MAX_MEMORY_SIZE Django refuses before reading; the view meets the same
            # refusal (400) as it would have.
            with contextlib.suppress(RequestDataTooBig):
                request.body  # noqa: B018  (read into the request, off the file Django may close)
        return request, error_response

    async def get_response_async(self, request):
        if request.path_info in self._own_thread_paths:
            return await sync_to_async(self._respond_once, thread_sensitive=True)(request)
        # asgiref's sync_to_async, not run_in_executor: async_to_sync in a view (a publish to the
        # channel layer) must reach this event loop, not a loop of its own.
        return await sync_to_async(self._respond, thread_sensitive=False, executor=self.threads)(request)

    def _respond(self, request):
        # Django runs these on request_started and request_finished, in a thread of their own; the
        # connections this request uses are this thread's.
        reset_queries()
        close_old_connections()
        try:
            return self.get_response(request)
        finally:
            close_old_connections()

    def _respond_once(self, request):
        """On a thread that ends with the request: its connections end with it."""
        try:
            return self.get_response(request)
        finally:
            connections.close_all()
