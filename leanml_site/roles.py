"""Per-project roles and what each may do: the one table access is decided by."""

from enum import StrEnum

from django.db import models


class Role(models.TextChoices):
    EXPERT = "expert", "Domain expert"
    DATA_SCIENTIST = "data_scientist", "Data scientist"
    PRODUCT_MANAGER = "product_manager", "Product manager"
    OWNER = "owner", "Owner"


class Capability(StrEnum):
    VIEW = "view"  # see the project, its samples, labels, agreement
    LABEL = "label"  # take queue items and label them
    CLEAN = "clean"  # correct fields, flag samples, merge duplicates
    ADJUDICATE = "adjudicate"  # settle disagreements on the review page
    IMPORT = "import"
    EXPORT = "export"
    QUEUE = "queue"  # reprioritise the queue
    MANAGE = "manage"  # project settings, label classes, members
    AUDIT = "audit"  # read the audit log
    TRAIN = "train"  # trigger retrains, open iterations
    DECIDE = "decide"  # approve / reject candidates, promote deployments
    # Act on the model without deciding on it: abandon an iteration,
    # acknowledge an alert, set the loop's shared settings (slices, gates).
    # Whoever trains or decides may.
    STEER = "steer"


_E, _DS, _PM, _O = Role.EXPERT, Role.DATA_SCIENTIST, Role.PRODUCT_MANAGER, Role.OWNER

CAPABILITIES: dict[Capability, frozenset[str]] = {
    Capability.VIEW: frozenset({_E, _DS, _PM, _O}),
    Capability.LABEL: frozenset({_E, _DS, _O}),
    Capability.CLEAN: frozenset({_E, _DS, _O}),
    Capability.ADJUDICATE: frozenset({_E, _O}),
    Capability.IMPORT: frozenset({_DS, _O}),
    Capability.EXPORT: frozenset({_DS, _PM, _O}),
    Capability.QUEUE: frozenset({_DS, _O}),
    Capability.MANAGE: frozenset({_O}),
    Capability.AUDIT: frozenset({_O}),
    Capability.TRAIN: frozenset({_DS, _O}),
    Capability.DECIDE: frozenset({_PM, _O}),
    Capability.STEER: frozenset({_DS, _PM, _O}),
}


def role_can(role: str | None, capability: Capability) -> bool:
    return role is not None and role in CAPABILITIES[capability]
