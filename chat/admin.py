from django.contrib import admin

from chat.models import Message, Room


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    list_display = ("name", "title", "last_seq", "created_at")
    list_filter = ("created_at",)
    search_fields = ("name", "title")
    readonly_fields = ("last_seq", "created_at")


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("room", "seq", "user", "short_content", "created")
    list_filter = ("room", "created")
    search_fields = ("content", "user__username")
    list_select_related = ("room", "user")
    ordering = ("-created",)
    raw_id_fields = ("user",)
    readonly_fields = ("room", "user", "seq", "client_id", "created")
    show_full_result_count = False

    @admin.display(description="content")
    def short_content(self, obj: Message) -> str:
        return obj.content if len(obj.content) <= 80 else obj.content[:79] + "…"

    def has_add_permission(self, request) -> bool:
        return False  # messages are created through the chat, which allocates seq
