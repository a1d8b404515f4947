from dataclasses import dataclass, field

import pytest
from django.test import Client

from leanml_site.roles import Role

from .factories import LabelClassFactory, MembershipFactory, ProjectFactory, UserFactory


@dataclass
class Team:
    """A project with two label classes and one member per role, plus an
    outsider who belongs to another project only."""

    project: object
    classes: list
    users: dict = field(default_factory=dict)  # role -> user
    outsider: object = None
    other_project: object = None

    def client(self, role_or_user):
        user = self.users[role_or_user] if isinstance(role_or_user, str) else role_or_user
        client = Client()
        client.force_login(user)
        return client


@pytest.fixture
def team(db):
    project = ProjectFactory(name="Reviews")
    classes = [
        LabelClassFactory(project=project, name="great", hotkey="1", order=0),
        LabelClassFactory(project=project, name="other", hotkey="2", order=1),
    ]
    users = {}
    for role in Role:
        user = UserFactory(username=role.value)
        MembershipFactory(project=project, user=user, role=role)
        users[role.value] = user
    other_project = ProjectFactory(name="Someone else's")
    outsider = UserFactory(username="outsider")
    MembershipFactory(project=other_project, user=outsider, role=Role.OWNER)
    return Team(project, classes, users, outsider, other_project)


def pytest_configure(config):
    from django.conf import settings

    # Hashing passwords at full strength costs ~0.3 s a user; tests need none of it.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
