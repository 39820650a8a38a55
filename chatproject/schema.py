"""OpenAPI schema post-processing (drf-spectacular's POSTPROCESSING_HOOKS)."""

NOT_ACCEPTABLE = {
    "description": "The Accept header names no media type the server answers in (application/json).",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}

UNSUPPORTED_MEDIA_TYPE = {
    "description": "The body is neither JSON nor a form.",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}


def add_unsupported_media_type(result, generator, **kwargs):
    """Every operation that takes a body answers 415 {"detail"} to a body of another media type; every
    JSON operation answers 406 {"detail"} to an Accept header without JSON."""
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            content_types = {
                kind for answer in operation.get("responses", {}).values() for kind in answer.get("content", {})
            }
            if content_types == {"application/json"}:
                operation.setdefault("responses", {}).setdefault("406", NOT_ACCEPTABLE)
            if "requestBody" in operation:
                operation.setdefault("responses", {}).setdefault("415", UNSUPPORTED_MEDIA_TYPE)
    return result
