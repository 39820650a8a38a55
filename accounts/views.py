from django.contrib.auth import authenticate
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
)
from accounts.services import UsernameTaken, user_register
from chatproject.errors import ErrorSerializer, ValidationErrorSerializer

BAD_CREDENTIALS = {"detail": "Incorrect username or password"}


def unauthorized(detail: str) -> Response:
    return Response({"detail": detail}, status=401, headers={"WWW-Authenticate": "Bearer"})


class RegisterView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        request=RegisterSerializer,
        responses={201: UserSerializer, 400: ValidationErrorSerializer},
        summary="Create an account",
    )
    def post(self, request):
        serializer = RegisterSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            user = user_register(**serializer.validated_data)
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
        responses={200: TokenResponseSerializer, 400: ValidationErrorSerializer, 401: ErrorSerializer},
        summary="Log in (OAuth2 password grant)",
    )
    def post(self, request):
        serializer = TokenRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = authenticate(
            request,
            username=serializer.validated_data["username"],
            password=serializer.validated_data["password"],
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
