from django.urls import re_path

from chat import views

urlpatterns = [
    re_path(r"^rooms/?$", views.RoomListView.as_view(), name="rooms"),
    re_path(r"^messages/(?P<room>[^/]+)/?$", views.MessagesView.as_view(), name="messages"),
    re_path(r"^healthz/?$", views.HealthView.as_view(), name="healthz"),
]
