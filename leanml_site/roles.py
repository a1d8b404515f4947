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


# What a capability lets a person do, in the words a refusal uses.
DOING: dict[Capability, str] = {
    Capability.VIEW: "see its samples and labels",
    Capability.LABEL: "label samples",
    Capability.CLEAN: "correct or flag samples",
    Capability.ADJUDICATE: "settle disagreements or suspected label errors",
    Capability.IMPORT: "import data",
    Capability.EXPORT: "export data",
    Capability.QUEUE: "reprioritise the labelling queue",
    Capability.MANAGE: "change the project's settings, classes or members",
    Capability.AUDIT: "read the audit log",
    Capability.TRAIN: "train models or surface samples for labelling",
    Capability.DECIDE: "sign off or reject a candidate model",
    Capability.STEER: "abandon iterations, acknowledge alerts or change the loop's settings",
}
_PLURAL = {
    Role.EXPERT: "domain experts",
    Role.DATA_SCIENTIST: "data scientists",
    Role.PRODUCT_MANAGER: "product managers",
    Role.OWNER: "owners",
}


def refusal_text(role: str | None, capability: Capability) -> str:
    """Why ``role`` is refused ``capability``, and who may instead."""
    allowed = [_PLURAL[r] for r in Role if r in CAPABILITIES[capability]]
    who = ", ".join(allowed[:-1]) + (" and " if len(allowed) > 1 else "") + allowed[-1]
    name = dict(Role.choices).get(role, role)
    return f"Your role ({name}) may not {DOING[capability]} in this project; {who} may."


def role_can(role: str | None, capability: Capability) -> bool:
    return role is not None and role in CAPABILITIES[capability]
