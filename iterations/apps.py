import importlib

from django.apps import AppConfig
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


def load_submodel_modules(modules) -> list[str]:
    """Import the modules that register a team's own sub-models, so the
    registry (and the trusted types artifacts are loaded with) knows them in
    every process. A module that fails to import stops start-up with its name:
    a worker that silently lacked a sub-model would fail every training."""
    loaded = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as error:
            raise ImproperlyConfigured(
                f"LEANML_SUBMODEL_MODULES names {name!r}, which cannot be imported: {error}"
            ) from error
        loaded.append(name)
    return loaded


class IterationsConfig(AppConfig):
    name = "iterations"

    def ready(self):
        load_submodel_modules(settings.LEANML_SUBMODEL_MODULES)
