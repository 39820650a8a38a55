from django.urls import re_path

from chat.consumers import RoomConsumer, UnknownPathConsumer

websocket_urlpatterns = [
    re_path(r"^ws/(?P<room>[^/]+)/?$", RoomConsumer.as_asgi()),
    re_path(r"", UnknownPathConsumer.as_asgi()),
]
