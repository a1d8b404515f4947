from .models import AuditEvent


def audit_record(*, actor, action, project=None, target=None, before=None, after=None):
    """Append one audit event; ``target`` is any model instance (or None)."""
    return AuditEvent.objects.create(
        actor=actor if actor is not None and actor.is_authenticated else None,
        project=project,
        action=action,
        target_type=target._meta.label_lower if target is not None else "",
        target_id=str(target.pk) if target is not None else "",
        before=before,
        after=after,
    )
