from django.urls import path

from accounts import views

urlpatterns = [
    path("register", views.RegisterView.as_view(), name="register"),
    path("token", views.TokenView.as_view(), name="token"),
    path("token/refresh", views.TokenRefreshView.as_view(), name="token-refresh"),
    path("logout", views.LogoutView.as_view(), name="logout"),
    path("users/me", views.MeView.as_view(), name="me"),
    path("ws-ticket", views.WsTicketView.as_view(), name="ws-ticket"),
]
