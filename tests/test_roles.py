"""The words a refusal uses: what the role may not do, and who may."""

import pytest

from leanml_site.roles import CAPABILITIES, DOING, Capability, Role, refusal_text


def test_every_capability_is_described():
    assert set(DOING) == set(Capability)


@pytest.mark.parametrize(
    ("role", "capability", "expected"),
    [
        (
            Role.PRODUCT_MANAGER,
            Capability.TRAIN,
            "Your role (Product manager) may not train models or surface samples for "
            "labelling in this project; data scientists and owners may.",
        ),
        (
            Role.EXPERT,
            Capability.QUEUE,
            "Your role (Domain expert) may not reprioritise the labelling queue in this "
            "project; data scientists and owners may.",
        ),
        (
            Role.DATA_SCIENTIST,
            Capability.MANAGE,
            "Your role (Data scientist) may not change the project's settings, classes or "
            "members in this project; owners may.",
        ),
    ],
)
def test_refusal_names_the_act_and_who_may(role, capability, expected):
    assert refusal_text(role, capability) == expected


@pytest.mark.parametrize("capability", list(Capability))
def test_refusal_lists_exactly_the_roles_that_may(capability):
    text = refusal_text(Role.EXPERT, capability).split("; ", 1)[1]
    named = {
        role
        for role, plural in [
            (Role.EXPERT, "domain experts"),
            (Role.DATA_SCIENTIST, "data scientists"),
            (Role.PRODUCT_MANAGER, "product managers"),
            (Role.OWNER, "owners"),
        ]
        if plural in text
    }
    assert named == set(CAPABILITIES[capability])
