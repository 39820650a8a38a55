from django.urls import re_path

from accounts import views

urlpatterns = [
    re_path(r"^register/?$", views.RegisterView.as_view(), name="register"),
    re_path(r"^token/?$", views.TokenView.as_view(), name="token"),
    re_path(r"^token/refresh/?$", views.TokenRefreshView.as_view(), name="token-refresh"),
    re_path(r"^logout/?$", views.LogoutView.as_view(), name="logout"),
    re_path(r"^users/me/?$", views.MeView.as_view(), name="me"),
]
