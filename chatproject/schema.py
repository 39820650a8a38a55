"""OpenAPI schema post-processing (drf-spectacular's POSTPROCESSING_HOOKS)."""

NOT_ACCEPTABLE = {
    "description": "The Accept header names no media type the server answers in (application/json).",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}

UNSUPPORTED_MEDIA_TYPE = {
    "description": "The body is neither JSON nor a form.",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}


UNAVAILABLE = {
    "description": "The database cannot be reached for now (`code`: `unavailable`); try again after Retry-After.",
    "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait (5)."}},
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}


def add_unsupported_media_type(result, generator, **kwargs):
    """Every operation that takes a body answers 415 {"detail"} to a body of another media type; every
    JSON operation answers 406 {"detail"} to an Accept header without JSON, and 503 {"detail", "code"}
    while the database cannot be reached (GET /healthz says so in its own 503)."""
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            content_types = {
                kind for answer in operation.get("responses", {}).values() for kind in answer.get("content", {})
            }
            if content_types == {"application/json"}:
                operation.setdefault("responses", {}).setdefault("406", NOT_ACCEPTABLE)
                operation["responses"].setdefault("503", UNAVAILABLE)
            if "requestBody" in operation:
                operation.setdefault("responses", {}).setdefault("415", UNSUPPORTED_MEDIA_TYPE)
    return result
