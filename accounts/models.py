from django.contrib.auth.models import AbstractUser, UserManager
from django.contrib.auth.validators import ASCIIUsernameValidator
from django.db import models
from django.db.models.functions import Lower


class CaseInsensitiveUserManager(UserManager):
    def get_by_natural_key(self, username):
        """Log in as "alice" or "Alice" alike: names are unique regardless of case.

        Names are ASCII, and a name that is not cannot be anyone's: PostgreSQL's case folding would
        otherwise find "alice" for "alıce" (dotless i) or "ſam" (long s) for "sam", and the failed
        logins counted under one spelling would leave the others free to guess.
        """
        if not username.isascii():
            raise self.model.DoesNotExist
        return self.get(username__iexact=username)


class User(AbstractUser):
    """A chat user. Usernames are ASCII letters, digits and @.+-_, unique ignoring case."""

    username_validator = ASCIIUsernameValidator()

    username = models.CharField(
        "username",
        max_length=150,
        unique=True,
        validators=[username_validator],
        help_text="1–150 characters: letters, digits and @.+-_ only.",
        error_messages={"unique": "A user with that username already exists."},
    )

    objects = CaseInsensitiveUserManager()

    class Meta:
        permissions = [("ban_user", "Can ban and unban users")]
        constraints = [
            models.UniqueConstraint(Lower("username"), name="accounts_user_username_ci_unique"),
        ]

    def __str__(self) -> str:
        return self.username
