import factory

from accounts.models import User

DEFAULT_PASSWORD = "correct-horse-battery"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.PostGenerationMethodCall("set_password", DEFAULT_PASSWORD)

    @factory.post_generation
    def _save(obj, create, extracted, **kwargs):
        if create:
            obj.save()


def field_values(instance) -> dict:
    """Every concrete field's value: an instance read in plain SQL compares whole with the ORM's."""
    return {field.attname: getattr(instance, field.attname) for field in type(instance)._meta.concrete_fields}
