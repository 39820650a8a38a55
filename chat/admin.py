"""Moderation in Django admin: every write goes through chat.services, so open sockets see it."""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet

from chat import services
from chat.models import AuditEntry, Message, Mute, Room
from chat.paginators import EstimatedCountPaginator

DELETE_PREVIEW = 100


class RoomAdminForm(forms.ModelForm):
    class Meta:
        model = Room
        fields = ("name", "title")

    def clean_name(self):
        name = self.cleaned_data["name"]
        if Room.objects.filter(name__iexact=name).exclude(pk=self.instance.pk).exists():
            raise ValidationError("A room with that name already exists.")
        return name

    def clean_title(self):
        title = self.cleaned_data["title"]
        error = services.room_title_error(title)
        if error:
            raise ValidationError(error)
        return title


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    form = RoomAdminForm
    list_display = ("name", "title", "last_seq", "created_at", "archived_at")
    list_filter = ("created_at", ("archived_at", admin.EmptyFieldListFilter))
    search_fields = ("name", "title")
    readonly_fields = ("last_seq", "created_at", "archived_at")
    actions = ("archive_rooms", "unarchive_rooms")

    def get_readonly_fields(self, request, obj=None):
        # A room's name is in its clients' URLs: fixed once created.
        return (*self.readonly_fields, "name") if obj else self.readonly_fields

    def save_model(self, request, obj, form, change):
        if change:
            services.room_update(room=obj, title=obj.title, actor=request.user)
            return
        # A moderator is not rate-limited like a user (user=None); the audit log names them.
        room = services.room_create(user=None, name=obj.name, title=obj.title, actor=request.user)
        obj.pk, obj.created_at = room.pk, room.created_at

    @admin.action(description="Archive selected rooms (read-only)", permissions=["change"])
    def archive_rooms(self, request, queryset):
        self._change_archiving(request, queryset, archive=True)

    @admin.action(description="Unarchive selected rooms", permissions=["change"])
    def unarchive_rooms(self, request, queryset):
        self._change_archiving(request, queryset, archive=False)

    def _change_archiving(self, request, queryset, *, archive: bool) -> None:
        """Rooms already so are left alone by the services, and counted apart."""
        rooms = list(queryset)
        change = services.room_archive if archive else services.room_unarchive
        changed = sum(change(room=room, actor=request.user) for room in rooms)
        verb, state = ("Archived", "archived") if archive else ("Unarchived", "open")
        skipped = len(rooms) - changed
        text = f"{verb} {changed} room(s)." + (f" Skipped {skipped} already {state}." if skipped else "")
        self.message_user(request, text, messages.SUCCESS)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # archive instead: deleting a room would silently drop its open sockets' history


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("room", "seq", "user", "short_content", "created")
    list_filter = ("room", "created")
    search_fields = ("content", "user__username")
    list_select_related = ("room", "user")
    ordering = ("-created",)
    raw_id_fields = ("user",)
    readonly_fields = ("room", "user", "seq", "client_id", "created")
    # No COUNT(*) of a million rows per page load: no unfiltered total, an estimated count on
    # PostgreSQL, and no per-filter counts (facets).
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    show_facets = admin.ShowFacets.NEVER

    @admin.display(description="content")
    def short_content(self, obj: Message) -> str:
        return obj.content if len(obj.content) <= 80 else obj.content[:79] + "…"

    def has_add_permission(self, request) -> bool:
        return False  # messages are created through the chat, which allocates seq

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # a moderator reads or deletes; content is the author's

    def delete_model(self, request, obj):
        services.message_delete(messages=[obj], actor=request.user)

    def delete_queryset(self, request, queryset):
        # The built-in "delete selected" action lands here too, so bulk deletes are announced.
        services.message_delete(messages=queryset, actor=request.user)

    def log_deletions(self, request, queryset):
        """Not in the admin's own history as well: the audit log records every deleted message, with its
        content, in the service's transactions (a second record of 40,000 rows held the database)."""

    def get_deleted_objects(self, objs, request):
        """The confirmation page lists the first DELETE_PREVIEW messages and counts the rest, instead of
        rendering every one (40,000 selected took 6.6 s and 5.9 MB)."""
        if not isinstance(objs, QuerySet):
            return super().get_deleted_objects(objs, request)
        total = objs.count()
        if total <= DELETE_PREVIEW:
            return super().get_deleted_objects(objs, request)
        shown, model_count, perms_needed, protected = super().get_deleted_objects(list(objs[:DELETE_PREVIEW]), request)
        model_count[Message._meta.verbose_name_plural] = total
        return [*shown, f"… and {total - DELETE_PREVIEW} more"], model_count, perms_needed, protected


class MuteForm(forms.ModelForm):
    class Meta:
        model = Mute
        fields = ("user", "room", "until")

    def clean_until(self):
        until = self.cleaned_data["until"]
        error = until is not None and services.mute_until_error(until)
        if error:
            raise ValidationError(error)
        return until


@admin.register(Mute)
class MuteAdmin(admin.ModelAdmin):
    form = MuteForm
    list_display = ("user", "room", "until", "created_by", "created")
    list_filter = ("room",)
    search_fields = ("user__username",)
    list_select_related = ("user", "room", "created_by")
    raw_id_fields = ("user",)
    fields = ("user", "room", "until")

    def _may_mute(self, request) -> bool:
        return request.user.has_perm("chat.mute_user")

    def has_module_permission(self, request) -> bool:
        return self._may_mute(request) or super().has_module_permission(request)

    def has_view_permission(self, request, obj=None) -> bool:
        return self._may_mute(request) or super().has_view_permission(request, obj)

    def has_add_permission(self, request) -> bool:
        return self._may_mute(request)

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # mute again with a new end instead

    def has_delete_permission(self, request, obj=None) -> bool:
        return self._may_mute(request)

    def save_model(self, request, obj, form, change):
        obj.pk = services.mute_create(user=obj.user, room=obj.room, until=obj.until, actor=request.user).pk

    def delete_model(self, request, obj):
        services.mute_delete(mutes=[obj], actor=request.user)

    def delete_queryset(self, request, queryset):
        # The built-in "delete selected" action lands here too, so bulk unmutes are audited.
        services.mute_delete(mutes=queryset, actor=request.user)


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    list_display = ("created", "actor", "action", "target_type", "target_repr")
    list_filter = ("action", "target_type", "created")
    search_fields = ("actor__username", "target_repr")
    list_select_related = ("actor",)
    readonly_fields = ("created", "actor", "action", "target_type", "target_id", "target_repr", "detail")
    show_full_result_count = False

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
