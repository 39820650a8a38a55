from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin

from accounts.forms import AdminLoginForm
from accounts.models import User
from accounts.services import BAN_PERMISSION, user_ban, user_may_ban, user_unban

# The admin's password check is rate limited as POST /token's is, in the same counters.
admin.site.login_form = AdminLoginForm


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    list_display = ("username", "is_active", "is_staff", "date_joined", "last_login")
    list_filter = ("is_active", "is_staff", "is_superuser", "date_joined")
    search_fields = ("username", "email")
    ordering = ("-date_joined",)
    actions = ("ban_users", "unban_users")

    def has_ban_permission(self, request) -> bool:
        return request.user.has_perm(BAN_PERMISSION)

    def get_readonly_fields(self, request, obj=None):
        readonly = super().get_readonly_fields(request, obj)
        if obj is not None and not user_may_ban(actor=request.user, user=obj):
            return (*readonly, "is_active")  # ticking it would ban or unban
        return readonly

    @admin.action(description="Ban selected users (close their sockets, revoke tokens)", permissions=["ban"])
    def ban_users(self, request, queryset):
        self._change_bans(request, queryset, ban=True)

    @admin.action(description="Unban selected users", permissions=["ban"])
    def unban_users(self, request, queryset):
        self._change_bans(request, queryset, ban=False)

    def _change_bans(self, request, queryset, *, ban: bool) -> None:
        """Ban or unban, by the same rules both ways (user_may_ban); users already so are left alone,
        so the audit log records only what changed."""
        users = list(queryset)
        to_change = [user for user in users if user.is_active == ban]
        allowed = [user for user in to_change if user_may_ban(actor=request.user, user=user)]
        for user in allowed:
            (user_ban if ban else user_unban)(user=user, actor=request.user)
        verb, state = ("Banned", "banned") if ban else ("Unbanned", "active")
        skipped = []
        if len(users) > len(to_change):
            skipped.append(f"{len(users) - len(to_change)} already {state}")
        if len(to_change) > len(allowed):
            skipped.append(f"{len(to_change) - len(allowed)} yourself or a superuser")
        text = f"{verb} {len(allowed)} user(s)." + (f" Skipped {', '.join(skipped)}." if skipped else "")
        self.message_user(request, text, messages.SUCCESS)

    def save_model(self, request, obj, form, change):
        activity_changed = change and "is_active" in form.changed_data
        super().save_model(request, obj, form, change)
        if activity_changed:
            # Through the ban services, as the actions: a deactivation revokes tokens and closes
            # sockets, and the audit log records it either way.
            (user_unban if obj.is_active else user_ban)(user=obj, actor=request.user)
