import logging

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import tokens
from accounts.serializers import (
    MeSerializer,
    RefreshTokenSerializer,
    RegisterSerializer,
    TokenRequestSerializer,
    TokenResponseSerializer,
    UserSerializer,
    WsTicketSerializer,
)
from accounts.services import UsernameTaken, limit_per_address, user_login, user_register
from accounts.tickets import ws_ticket_issue
from chatproject.errors import RETRY_AFTER_HEADER, ErrorSerializer, RateLimitedSerializer, ValidationErrorSerializer
from chatproject.ratelimit import hit, parse_rate

logger = logging.getLogger("chat.accounts")

BAD_CREDENTIALS = {"detail": "Incorrect username or password"}


def unauthorized(detail: str) -> Response:
    return Response({"detail": detail}, status=401, headers={"WWW-Authenticate": "Bearer"})


class RegisterView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        request=RegisterSerializer,
        responses={201: UserSerializer, 400: ValidationErrorSerializer, 429: RateLimitedSerializer},
        parameters=[RETRY_AFTER_HEADER],
        summary="Create an account",
    )
    def post(self, request):
        limit_per_address(request, "register")
        serializer = RegisterSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            user = user_register(**serializer.validated_data)
        except DjangoValidationError as exc:  # Django's password validators, run by the service
            return Response({"password": list(exc.messages)}, status=400)
        except UsernameTaken:
            return Response({"username": ["A user with that username already exists."]}, status=400)
        return Response({"id": user.pk, "username": user.username}, status=status.HTTP_201_CREATED)


class TokenView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        request={
            "application/x-www-form-urlencoded": TokenRequestSerializer,
            "application/json": TokenRequestSerializer,
        },
        responses={
            200: TokenResponseSerializer,
            400: ValidationErrorSerializer,
            401: ErrorSerializer,
            429: RateLimitedSerializer,
        },
        parameters=[RETRY_AFTER_HEADER],
        summary="Log in (OAuth2 password grant)",
    )
    def post(self, request):
        address = limit_per_address(request, "token")
        serializer = TokenRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = user_login(
            request=request,
            username=serializer.validated_data["username"],
            password=serializer.validated_data["password"],
            client_ip=address,
        )
        if user is None:  # wrong password, unknown and inactive users look the same
            return Response(BAD_CREDENTIALS, status=401, headers={"WWW-Authenticate": "Bearer"})
        return Response(tokens.token_pair_issue(user=user).as_response())


class TokenRefreshView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        request=RefreshTokenSerializer,
        responses={200: TokenResponseSerializer, 400: ValidationErrorSerializer, 401: ErrorSerializer},
        summary="Exchange a refresh token for a new pair (the old refresh token is revoked)",
    )
    def post(self, request):
        serializer = RefreshTokenSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            pair = tokens.token_pair_refresh(refresh_token=serializer.validated_data["refresh_token"])
        except tokens.InvalidToken:
            return unauthorized("Refresh token is invalid, expired or revoked")
        return Response(pair.as_response())


class LogoutView(APIView):
    @extend_schema(
        request=RefreshTokenSerializer,
        responses={
            204: OpenApiResponse(description="Refresh token revoked"),
            400: ValidationErrorSerializer,
            401: ErrorSerializer,
        },
        summary="Revoke a refresh token",
    )
    def post(self, request):
        serializer = RefreshTokenSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            tokens.refresh_token_revoke(refresh_token=serializer.validated_data["refresh_token"], user=request.user)
        except tokens.InvalidToken:
            return Response({"refresh_token": ["Token is invalid, expired, revoked or not yours."]}, status=400)
        return Response(status=status.HTTP_204_NO_CONTENT)


class MeView(APIView):
    @extend_schema(responses={200: MeSerializer, 401: ErrorSerializer}, summary="The current user")
    def get(self, request):
        user = request.user
        return Response({"id": user.pk, "username": user.username, "date_joined": user.date_joined.isoformat()})


class WsTicketView(APIView):
    @extend_schema(
        request=None,
        responses={200: WsTicketSerializer, 401: ErrorSerializer, 429: RateLimitedSerializer, 503: ErrorSerializer},
        parameters=[RETRY_AFTER_HEADER],
        summary="A single-use ticket for /ws/{room}?ticket=... (valid 30 s)",
    )
    def post(self, request):
        hit("ws-ticket", str(request.user.pk), parse_rate(settings.WS_TICKET_RATE))
        try:
            ticket = ws_ticket_issue(user=request.user, access_expires_at=float(request.auth["exp"]))
        except Exception:
            logger.warning("ws ticket not issued (cache unavailable)", exc_info=True)
            return Response({"detail": "Tickets are unavailable; try again shortly."}, status=503)
        return Response({"ticket": ticket, "expires_in": settings.WS_TICKET_SECONDS})
