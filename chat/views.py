from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.exceptions import AuthenticationFailed

from chat import health, selectors, services
from chat.events import message_payload, message_payload_from_row
from chat.models import Room
from chat.serializers import (
    HealthSerializer,
    MessageCreateSerializer,
    MessageListQuerySerializer,
    MessageSerializer,
    RoomCreateSerializer,
    RoomListSerializer,
    RoomSerializer,
)
from chatproject.errors import (
    RETRY_AFTER_HEADER,
    ErrorSerializer,
    ForbiddenMessageSerializer,
    RateLimitedSerializer,
    ValidationErrorSerializer,
)


def room_or_404(name: str) -> Room:
    room = selectors.room_get(name=name)
    if room is None:
        raise NotFound("Room not found")
    return room


def json_object_with(request, field: str) -> dict:
    """The body as a JSON object holding `field`; its value is checked by the service."""
    if not isinstance(request.data, dict):
        raise ValidationError({"non_field_errors": ["Expected a JSON object."]})
    if field not in request.data:
        raise ValidationError({field: ["This field is required."]})
    return request.data


class RoomListView(APIView):
    # Only creating a room needs a token; listing is public and ignores a stale token a client sends.
    def get_permissions(self):
        return super().get_permissions() if self._creating() else [AllowAny()]

    def get_authenticators(self):
        return super().get_authenticators() if self._creating() else []

    def _creating(self) -> bool:
        # request is None while drf-spectacular inspects the view: describe the POST's authentication.
        return self.request is None or self.request.method == "POST"

    @extend_schema(responses={200: RoomListSerializer}, summary="Rooms with their online counts", auth=[])
    def get(self, request):
        return Response({"rooms": selectors.room_list()})

    @extend_schema(
        request=RoomCreateSerializer,
        responses={
            201: RoomSerializer,
            400: ValidationErrorSerializer,
            401: ErrorSerializer,
            429: RateLimitedSerializer,
        },
        parameters=[RETRY_AFTER_HEADER],
        summary="Create a room",
    )
    def post(self, request):
        json_object_with(request, "name")
        try:
            room = services.room_create(
                user=request.user, name=request.data["name"], title=request.data.get("title", "")
            )
        except services.RoomRejected as exc:
            raise ValidationError({exc.field: [exc.detail]}) from exc
        body = selectors.room_object(name=room.name, title=room.title, online=0, archived_at=room.archived_at)
        return Response(body, status=status.HTTP_201_CREATED)


class MessagesView(APIView):
    @extend_schema(
        parameters=[MessageListQuerySerializer],
        responses={
            200: MessageSerializer(many=True),
            400: ValidationErrorSerializer,
            401: ErrorSerializer,
            404: ErrorSerializer,
        },
        summary="Message history",
        description="Newest first by default (`limit`, `skip`); `before=<seq>` pages back, newest first; "
        "`after=<seq>` catches up, oldest first.",
    )
    def get(self, request, room: str):
        room_obj = room_or_404(room)
        query = MessageListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        rows = selectors.message_list(room=room_obj, **query.validated_data)
        return Response([message_payload_from_row(row, room_obj.name) for row in rows])

    @extend_schema(
        request=MessageCreateSerializer,
        responses={
            201: MessageSerializer,
            200: MessageSerializer,
            400: ValidationErrorSerializer,
            401: ErrorSerializer,
            403: ForbiddenMessageSerializer,
            404: ErrorSerializer,
            429: RateLimitedSerializer,
        },
        parameters=[OpenApiParameter("room", str, OpenApiParameter.PATH), RETRY_AFTER_HEADER],
        summary="Post a message",
        description="201 with the new message; 200 with the original when this client_id was used before.",
    )
    def post(self, request, room: str):
        room_obj = room_or_404(room)
        json_object_with(request, "content")
        try:
            result = services.message_create(
                room=room_obj,
                user=request.user,
                content=request.data["content"],
                client_id=request.data.get("client_id"),
            )
        except services.MessageForbidden as exc:
            return Response({"detail": exc.detail, "code": exc.code, **exc.extra}, status=status.HTTP_403_FORBIDDEN)
        except services.MessageRejected as exc:
            raise ValidationError({exc.field: [exc.detail]}) from exc
        except services.PosterDeactivated as exc:  # banned while this request ran: as the next request would be
            raise AuthenticationFailed("User is inactive", code="user_inactive") from exc
        code = status.HTTP_201_CREATED if result.created else status.HTTP_200_OK
        return Response(message_payload(result.message), status=code)


class HealthView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(responses={200: HealthSerializer, 503: HealthSerializer}, summary="Liveness of each part")
    def get(self, request):
        parts = {
            "database": "ok" if health.database_ok() else "unavailable",
            "channel_layer": "ok" if health.channel_layer_ok() else "unavailable",
        }
        healthy = all(v == "ok" for v in parts.values())
        body = {"status": "ok" if healthy else "unavailable", **parts}
        return Response(body, status=200 if healthy else 503)
