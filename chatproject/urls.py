from django.conf import settings
from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView, TemplateView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView


class ChatPage(TemplateView):
    """The web page; its message box counts against the server's own length limit."""

    template_name = "chat/index.html"

    def get_context_data(self, **kwargs):
        return {**super().get_context_data(**kwargs), "max_message_length": settings.CHAT_MAX_MESSAGE_LENGTH}


class Favicon(RedirectView):
    """Pages without an icon of their own (the admin's) ask for /favicon.ico: the chat's icon."""

    def get_redirect_url(self, *args, **kwargs):
        return static("chat/icon.svg")


urlpatterns = [
    path("", ChatPage.as_view(), name="index"),
    path("favicon.ico", Favicon.as_view(), name="favicon"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves Swagger UI's start-up script from ?script=, so no script is inline (CSP).
    path(
        "api/docs/",
        SpectacularSwaggerSplitView.as_view(url_name="schema", template_name="api/swagger_ui.html"),
        name="docs",
    ),
    path("", include("accounts.urls")),
    path("", include("chat.urls")),
]

handler400 = "chatproject.errors.bad_request"
handler403 = "chatproject.errors.permission_denied"
handler404 = "chatproject.errors.not_found"
handler500 = "chatproject.errors.server_error"
