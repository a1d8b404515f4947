from .models import AuditEvent


def audit_record(*, actor, action, project=None, target=None, before=None, after=None):
    """Append one audit event; ``target`` is any model instance (or None).

    One exception to "every audit row goes through here": a label's
    ``annotation.create`` event is written by ``annotation_submit`` in the
    same statement as the label (one round trip less on the busiest path),
    with the same columns and values this function would write.
    """
    return AuditEvent.objects.create(
        actor=actor if actor is not None and actor.is_authenticated else None,
        project=project,
        action=action,
        target_type=target._meta.label_lower if target is not None else "",
        target_id=str(target.pk) if target is not None else "",
        before=before,
        after=after,
    )
