"""Every error leaves the server as a JSON object: DRF errors, unknown paths and crashes alike."""

import logging

from django.http import JsonResponse
from rest_framework import serializers
from rest_framework.views import exception_handler

logger = logging.getLogger("chat.errors")


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()


class ValidationErrorSerializer(serializers.Serializer):
    """Field name → list of messages; `non_field_errors` or `detail` for errors of the whole body."""

    detail = serializers.CharField(required=False)
    non_field_errors = serializers.ListField(child=serializers.CharField(), required=False)


def api_exception_handler(exc, context):
    response = exception_handler(exc, context)
    if response is not None and response.status_code == 401:
        response["WWW-Authenticate"] = "Bearer"
    return response


def not_found(request, exception=None):
    return JsonResponse({"detail": "Not found."}, status=404)


def bad_request(request, exception=None):
    return JsonResponse({"detail": "Bad request."}, status=400)


def permission_denied(request, exception=None):
    return JsonResponse({"detail": "Permission denied."}, status=403)


def server_error(request):
    return JsonResponse({"detail": "Internal server error."}, status=500)
