"""OpenAPI schema post-processing (drf-spectacular's POSTPROCESSING_HOOKS)."""

UNSUPPORTED_MEDIA_TYPE = {
    "description": "The body is neither JSON nor a form.",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}


def add_unsupported_media_type(result, generator, **kwargs):
    """Every operation that takes a body answers 415 {"detail"} to a body of another media type."""
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            if "requestBody" in operation:
                operation.setdefault("responses", {}).setdefault("415", UNSUPPORTED_MEDIA_TYPE)
    return result
