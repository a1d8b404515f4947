from django.db import transaction

from leanml_site.audit import audit_record
from leanml_site.roles import Role

from ..models import LabelClass, Membership, Project


@transaction.atomic
def project_create(*, by, name, label_classes=(), **fields) -> Project:
    """Create a project with its label classes; the creator becomes its owner."""
    project = Project(name=name, created_by=by, **fields)
    project.full_clean()
    project.save()
    Membership.objects.create(project=project, user=by, role=Role.OWNER)
    for order, spec in enumerate(label_classes):
        spec = {"name": spec} if isinstance(spec, str) else dict(spec)
        spec.setdefault("hotkey", str(order + 1) if order < 9 else "")
        spec.setdefault("order", order)
        label_class = LabelClass(project=project, **spec)
        label_class.full_clean()
        label_class.save()
    audit_record(
        actor=by,
        project=project,
        action="project.create",
        target=project,
        after={"name": name, "label_classes": [c.name for c in project.label_classes.all()]},
    )
    return project


@transaction.atomic
def project_update(*, project, by, **changes) -> Project:
    before = {key: getattr(project, key) for key in changes}
    for key, value in changes.items():
        setattr(project, key, value)
    project.full_clean()
    project.save()
    audit_record(
        actor=by,
        project=project,
        action="project.update",
        target=project,
        before=before,
        after=changes,
    )
    return project


@transaction.atomic
def label_class_save(*, label_class, by) -> LabelClass:
    created = label_class.pk is None
    label_class.full_clean()
    label_class.save()
    audit_record(
        actor=by,
        project=label_class.project,
        action="label_class.create" if created else "label_class.update",
        target=label_class,
        after={"name": label_class.name, "hotkey": label_class.hotkey},
    )
    return label_class


@transaction.atomic
def membership_set(*, project, user, role, by) -> Membership:
    """Add ``user`` to the project or change their role."""
    membership = Membership.objects.select_for_update().filter(project=project, user=user).first()
    before = {"role": membership.role} if membership else None
    if membership is None:
        membership = Membership.objects.create(project=project, user=user, role=role)
    else:
        _refuse_last_owner_change(membership, new_role=role)
        membership.role = role
        membership.save(update_fields=["role"])
    audit_record(
        actor=by,
        project=project,
        action="membership.set",
        target=membership,
        before=before,
        after={"user": user.get_username(), "role": role},
    )
    return membership


@transaction.atomic
def membership_remove(*, membership, by) -> None:
    _refuse_last_owner_change(membership, new_role=None)
    audit_record(
        actor=by,
        project=membership.project,
        action="membership.remove",
        target=membership,
        before={"user": membership.user.get_username(), "role": membership.role},
    )
    membership.delete()


def _refuse_last_owner_change(membership, *, new_role):
    if membership.role != Role.OWNER or new_role == Role.OWNER:
        return
    owners = Membership.objects.filter(project=membership.project_id, role=Role.OWNER).count()
    if owners <= 1:
        raise ValueError("A project keeps at least one owner: make someone else owner first.")
