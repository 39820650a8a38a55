from django.urls import re_path

from chat.consumers import RoomConsumer

websocket_urlpatterns = [
    re_path(r"^ws/(?P<room>[^/]+)/?$", RoomConsumer.as_asgi()),
]
