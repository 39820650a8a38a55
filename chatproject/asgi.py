"""ASGI entry point.

HTTP goes to Django, the plain history GET to chat.fast_history; WebSocket passes the origin check,
then JWT auth, then the router.
"""

import gc
import os

import django
from django.conf import settings

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatproject.settings")
django.setup(set_prefix=False)  # before the chat modules import models

from chatproject.handler import PooledASGIHandler  # noqa: E402

django_asgi_app = PooledASGIHandler()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from chat.fast_history import FastHistory  # noqa: E402
from chat.middleware import JWTQueryStringAuthMiddleware, OriginCheck  # noqa: E402
from chat.routing import websocket_urlpatterns  # noqa: E402

# The plain GET /messages/<room> is answered below Django; every other request goes to Django.
http_app = (
    FastHistory(django_asgi_app, threads=django_asgi_app.threads) if settings.HISTORY_FAST_PATH else django_asgi_app
)

application = ProtocolTypeRouter(
    {
        "http": http_app,
        "websocket": OriginCheck(JWTQueryStringAuthMiddleware(URLRouter(websocket_urlpatterns))),
    }
)

# What is loaded by now (Django, the apps, their modules) lives as long as the process: frozen, the
# cyclic collector's full passes skip it. With a thousand sockets open a full pass still holds the
# event loop, but for about half as long (docs/performance.md). Garbage is collected first, so
# none of it is frozen for good.
gc.collect()
gc.freeze()
