from django.urls import path

from chat import views

urlpatterns = [
    path("rooms", views.RoomListView.as_view(), name="rooms"),
    path("messages/<str:room>", views.MessagesView.as_view(), name="messages"),
    path("healthz", views.HealthView.as_view(), name="healthz"),
]
