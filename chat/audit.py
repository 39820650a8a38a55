"""The audit log: services record every moderator or operator action here."""

from chat.models import AuditEntry


def _entry(*, actor, action: str, target, detail: dict | None) -> AuditEntry:
    return AuditEntry(
        actor=actor if actor is not None and actor.pk else None,
        action=action,
        target_type=target._meta.model_name if target is not None else "",
        target_id=str(target.pk) if target is not None else "",
        target_repr=str(target)[:200] if target is not None else "",
        detail=detail or {},
    )


def audit_record(*, actor, action: str, target, detail: dict | None = None) -> AuditEntry:
    """Record that `actor` (None: an operator at the shell) did `action` to `target` (None: to no one
    object, e.g. every room's old messages)."""
    entry = _entry(actor=actor, action=action, target=target, detail=detail)
    entry.save()
    return entry


def audit_record_many(*, actor, action: str, targets_details) -> None:
    """Record one action on many targets in one insert; `targets_details` yields (target, detail)."""
    AuditEntry.objects.bulk_create(
        [_entry(actor=actor, action=action, target=t, detail=d) for t, d in targets_details], batch_size=500
    )
