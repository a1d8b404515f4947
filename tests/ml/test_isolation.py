import ast
from pathlib import Path

ML = Path(__file__).resolve().parents[2] / "ml"
FORBIDDEN = (
    "django",
    "rest_framework",
    "celery",
    "labelling",
    "iterations",
    "monitoring",
    "leanml_site",
)


def test_ml_imports_no_django_or_app_code():
    offenders = []
    for path in ML.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []
