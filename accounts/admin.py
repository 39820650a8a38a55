from django.contrib import admin, messages
from django.contrib.auth.admin import GroupAdmin as DjangoGroupAdmin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.models import Group

from accounts.forms import AdminLoginForm
from accounts.models import User
from accounts.services import (
    BAN_PERMISSION,
    user_ban,
    user_delete,
    user_may_ban,
    user_may_manage,
    user_privileges,
    user_privileges_changed,
    user_unban,
)

# Who may do what: only a superuser changes these (user_may_manage).
PRIVILEGE_FIELDS = ("is_staff", "is_superuser", "groups", "user_permissions")

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
        readonly = tuple(super().get_readonly_fields(request, obj))
        if not request.user.is_superuser:
            readonly += PRIVILEGE_FIELDS
        if obj is not None and not user_may_ban(actor=request.user, user=obj):
            readonly += ("is_active",)  # ticking it would ban or unban
        return readonly

    def has_change_permission(self, request, obj=None) -> bool:
        # Also guards the password form: a staff member's password is set by a superuser or themselves.
        if obj is not None and not user_may_manage(actor=request.user, user=obj):
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        # "Delete selected users" asks this for each selected user, and refuses them all if one is refused.
        # Nobody deletes themselves (nor bans themselves): the rest of a bulk delete would be recorded
        # as done by an account that no longer exists.
        if obj is not None and (obj.pk == request.user.pk or not user_may_manage(actor=request.user, user=obj)):
            return False
        return super().has_delete_permission(request, obj)

    def get_deleted_objects(self, objs, request):
        """The users and how many messages and mutes go with them, without loading every message (the
        admin's own list would render each one of a spammer's tens of thousands)."""
        from chat.models import Message, Mute

        users = list(objs)
        refused = {User._meta.verbose_name for user in users if not self.has_delete_permission(request, user)}
        counts = {User: len(users)}
        for model in (Message, Mute):  # their own admins' permission to delete them, as Django asks
            counts[model] = model.objects.filter(user__in=users).count()
            if counts[model] and not self.admin_site._registry[model].has_delete_permission(request):
                refused.add(model._meta.verbose_name)
        summary = {model._meta.verbose_name_plural: count for model, count in counts.items() if count}
        return [str(user) for user in users], summary, refused, []

    def delete_view(self, request, object_id, extra_context=None):
        # Django runs the POST in one transaction: a user's messages would be deleted in one as well,
        # holding SQLite's write lock (every room's writer) for all of them. user_delete commits its
        # own chunks; what the view does besides (checks, the redirect) needs no transaction.
        # (The admin site's wrapper still checks CSRF.)
        if request.method == "POST":
            return self._delete_view(request, object_id, extra_context)
        return super().delete_view(request, object_id, extra_context)

    def delete_model(self, request, obj):
        user_delete(user=obj, actor=request.user)

    def delete_queryset(self, request, queryset):
        for user in queryset:
            user_delete(user=user, actor=request.user)

    def log_deletions(self, request, queryset):
        """Recorded by user_delete in the audit log, with each of the user's messages."""

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        if form.privileges_before is not None:
            user_privileges_changed(user=form.instance, before=form.privileges_before, actor=request.user)

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
        allowed = [user for user in users if user_may_ban(actor=request.user, user=user)]
        changed = sum((user_ban if ban else user_unban)(user=user, actor=request.user) for user in allowed)
        verb, state = ("Banned", "banned") if ban else ("Unbanned", "active")
        skipped = []
        if len(allowed) > changed:
            skipped.append(f"{len(allowed) - changed} already {state}")
        if len(users) > len(allowed):
            skipped.append(f"{len(users) - len(allowed)} yourself or a superuser")
        text = f"{verb} {changed} user(s)." + (f" Skipped {', '.join(skipped)}." if skipped else "")
        self.message_user(request, text, messages.SUCCESS)

    def save_model(self, request, obj, form, change):
        # Before the form's changes are saved: the groups and permissions follow in save_related.
        form.privileges_before = user_privileges(User.objects.get(pk=obj.pk)) if change else None
        active = obj.is_active if change and "is_active" in form.changed_data else None
        if active is not None:
            # Through the ban services, as the actions: a deactivation revokes tokens and closes
            # sockets, and the audit log records it. The form's tick is theirs to make.
            obj.is_active = not active
        super().save_model(request, obj, form, change)
        if active is not None:
            (user_unban if active else user_ban)(user=obj, actor=request.user)


admin.site.unregister(Group)


@admin.register(Group)
class GroupAdmin(DjangoGroupAdmin):
    """A group's permissions are its members': only a superuser changes them, as a user's own."""

    def has_add_permission(self, request) -> bool:
        return request.user.is_superuser

    def has_change_permission(self, request, obj=None) -> bool:
        return request.user.is_superuser

    def has_delete_permission(self, request, obj=None) -> bool:
        return request.user.is_superuser
