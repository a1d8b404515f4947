"""The OpenAPI schema is complete: drf-spectacular validates it and has no
warning to give (an endpoint it cannot describe, a name clash, an unknown
field type), so clients generated from /api/schema/ see every endpoint."""

import pytest
import yaml
from django.core.management import call_command
from drf_spectacular.management.commands.spectacular import SchemaGenerationError


def test_the_schema_validates_without_a_warning(tmp_path, capsys):
    out = tmp_path / "schema.yml"
    try:
        call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    except SchemaGenerationError:  # --fail-on-warn, after printing the warnings
        pytest.fail(f"drf-spectacular warned:\n{capsys.readouterr().err}")
    schema = yaml.safe_load(out.read_text())
    paths = schema["paths"]
    for path in (
        "/api/v1/projects/{project_pk}/predictions/",
        "/api/v1/projects/{project_pk}/alerts/{id}/acknowledge/",
        "/api/v1/projects/{project_pk}/queue/submit-next/",
    ):
        assert path in paths, path
    problem = schema["components"]["schemas"]["Error"]
    assert set(problem["properties"]) == {"message", "field", "errors"}
