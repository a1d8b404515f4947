"""A team's own sub-models, named in LEANML_SUBMODEL_MODULES, are known to
every process: registered, and trusted when their artifacts are loaded."""

import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from iterations.apps import load_submodel_modules
from iterations.services.artifacts import trusted_types
from ml.submodels import available, unregister

MODULE = "tests.iterations.held_submodel"
NAME = "test_held_tfidf"


def test_listed_modules_register_their_sub_models_and_trust_their_types(monkeypatch):
    # A fresh import, as in a process starting up (another test may have
    # imported the module already; registering happens on import).
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    assert NAME not in available()
    try:
        assert load_submodel_modules([MODULE]) == [MODULE]
        assert NAME in available()
        assert f"{MODULE}.HeldTfidf" in trusted_types()
    finally:
        unregister(NAME)
    assert NAME not in available()


def test_a_module_that_cannot_be_imported_stops_start_up_with_its_name():
    with pytest.raises(ImproperlyConfigured, match="'team_models.nowhere', which cannot be"):
        load_submodel_modules(["team_models.nowhere"])
