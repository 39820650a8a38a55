"""The admin's login form: the same login service, counters and limits as POST /token."""

import math

from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.exceptions import ValidationError

from accounts.services import limit_per_address, user_login
from chatproject.ratelimit import RateLimited


def wait_in_words(seconds: int) -> str:
    """A wait as a person reads it, rounded up: "40 seconds", "1 minute", "5 minutes"."""
    if seconds < 60:
        return f"{seconds} second{'' if seconds == 1 else 's'}"
    minutes = math.ceil(seconds / 60)
    return f"{minutes} minute{'' if minutes == 1 else 's'}"


class AdminLoginForm(AdminAuthenticationForm):
    """Django admin's login, checked by user_login: a wrong password here counts against the username
    as one on /token does, so guessing is limited whichever door it comes through."""

    error_messages = {
        **AdminAuthenticationForm.error_messages,
        "rate_limited": "Too many login attempts; try again in %(wait)s.",
    }

    def clean(self):
        username = self.cleaned_data.get("username")
        password = self.cleaned_data.get("password")
        try:
            # One count per address with /token's (AUTH_RATE): both are logins.
            address = limit_per_address(self.request, "token")
            if username is None or not password:
                return self.cleaned_data
            self.user_cache = user_login(request=self.request, username=username, password=password, client_ip=address)
        except RateLimited as exc:
            raise ValidationError(
                self.error_messages["rate_limited"], code="rate_limited", params={"wait": wait_in_words(exc.seconds)}
            ) from None
        if self.user_cache is None:  # wrong password, unknown and inactive users look the same
            raise self.get_invalid_login_error()
        self.confirm_login_allowed(self.user_cache)
        return self.cleaned_data
