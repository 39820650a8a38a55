from django.contrib import admin
from django.urls import include, path
from django.views.generic import TemplateView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

urlpatterns = [
    path("", TemplateView.as_view(template_name="chat/index.html"), name="index"),
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
