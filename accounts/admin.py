from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin

from accounts.models import User
from accounts.services import BAN_PERMISSION, user_ban, user_may_ban, user_unban


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
        banned = [user for user in queryset if user_may_ban(actor=request.user, user=user)]
        for user in banned:
            user_ban(user=user, actor=request.user)
        skipped = len(queryset) - len(banned)
        self.message_user(
            request,
            f"Banned {len(banned)} user(s)." + (f" Skipped {skipped} (yourself or a superuser)." if skipped else ""),
            messages.SUCCESS,
        )

    @admin.action(description="Unban selected users", permissions=["ban"])
    def unban_users(self, request, queryset):
        for user in queryset:
            user_unban(user=user, actor=request.user)
        self.message_user(request, f"Unbanned {len(queryset)} user(s).", messages.SUCCESS)

    def save_model(self, request, obj, form, change):
        activity_changed = change and "is_active" in form.changed_data
        super().save_model(request, obj, form, change)
        if activity_changed:
            # Through the ban services, as the actions: a deactivation revokes tokens and closes
            # sockets, and the audit log records it either way.
            (user_unban if obj.is_active else user_ban)(user=obj, actor=request.user)
