from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin

from accounts.models import User
from accounts.services import user_set_active


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    list_display = ("username", "is_active", "is_staff", "date_joined", "last_login")
    list_filter = ("is_active", "is_staff", "is_superuser", "date_joined")
    search_fields = ("username", "email")
    ordering = ("-date_joined",)

    def save_model(self, request, obj, form, change):
        became_inactive = change and "is_active" in form.changed_data
        super().save_model(request, obj, form, change)
        if became_inactive:
            # Through the service, so a deactivation revokes tokens and closes sockets.
            user_set_active(user=obj, active=obj.is_active)
