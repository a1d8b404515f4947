"""Every page and API endpoint × every role, an outsider and an anonymous visitor.

What each endpoint needs is written here from the role table in DESIGN.md,
independently of the code, so a view that checks the wrong capability (or
none) fails: members lacking it get 403, non-members get 404 (nothing leaks
about other projects), anonymous visitors go to the login page (pages) or get
401/403 (API), and members holding it never see 403/404/500.
"""

import pytest
from django.urls import reverse

from labelling.models import Flag, ImportJob, Membership, QueueItem
from leanml_site.roles import CAPABILITIES, Capability

from .factories import SampleFactory

pytestmark = pytest.mark.django_db

ROLES = ["expert", "data_scientist", "product_manager", "owner"]
V, L, C, A, IMP, E, Q, M, AU = (
    Capability.VIEW,
    Capability.LABEL,
    Capability.CLEAN,
    Capability.ADJUDICATE,
    Capability.IMPORT,
    Capability.EXPORT,
    Capability.QUEUE,
    Capability.MANAGE,
    Capability.AUDIT,
)


@pytest.fixture
def world(team):
    project = team.project
    sample = SampleFactory(project=project)
    flagged = SampleFactory(project=project)
    item = QueueItem.objects.create(project=project, sample=sample)
    flag = Flag.objects.create(sample=flagged, kind="corrupt", created_by=team.users["owner"])
    job = ImportJob.objects.create(
        project=project,
        created_by=team.users["owner"],
        original_name="x.csv",
        format="csv",
        state="succeeded",
    )
    membership = Membership.objects.get(project=project, user=team.users["expert"])
    return {
        "p": project.pk,
        "s": sample.pk,
        "fs": flagged.pk,
        "item": item.pk,
        "flag": flag.pk,
        "job": job.pk,
        "m": membership.pk,
        "label": team.classes[0].pk,
    }


# (method, url name, kwargs keys, capability, POST data)
PAGES = [
    ("get", "labelling:project_detail", ["p"], V, None),
    ("get", "labelling:project_settings", ["p"], M, None),
    ("post", "labelling:project_settings", ["p"], M, {}),
    ("get", "labelling:members", ["p"], V, None),
    ("post", "labelling:members", ["p"], M, {"username": "nobody", "role": "expert"}),
    ("post", "labelling:member_remove", ["p", "m"], M, {}),
    ("get", "labelling:audit", ["p"], AU, None),
    ("get", "labelling:label", ["p"], L, None),
    ("get", "labelling:label_card", ["p"], L, None),
    ("post", "labelling:label_submit", ["p"], L, {"sample": "{s}", "label": "great"}),
    ("post", "labelling:label_release", ["p"], L, {}),
    ("get", "labelling:sample_list", ["p"], V, None),
    ("get", "labelling:sample_detail", ["p", "s"], V, None),
    ("post", "labelling:sample_revise", ["p", "s"], C, {}),
    ("post", "labelling:sample_flag", ["p", "s"], C, {}),
    ("post", "labelling:flag_resolve", ["p", "fs", "flag"], C, {}),
    ("get", "labelling:duplicates", ["p"], V, None),
    ("post", "labelling:duplicates_merge", ["p"], C, {}),
    ("get", "labelling:review", ["p"], V, None),
    ("post", "labelling:adjudicate", ["p", "s"], A, {}),
    ("get", "labelling:agreement", ["p"], V, None),
    ("get", "labelling:import_list", ["p"], V, None),
    ("post", "labelling:import_list", ["p"], IMP, {}),
    ("get", "labelling:import_detail", ["p", "job"], V, None),
    ("get", "labelling:export", ["p"], E, None),
]

API = [
    ("get", "/api/v1/projects/{p}/", V, None),
    ("patch", "/api/v1/projects/{p}/", M, {"description": "x"}),
    ("get", "/api/v1/projects/{p}/label-classes/", V, None),
    ("post", "/api/v1/projects/{p}/label-classes/", M, {"name": "new", "hotkey": "7"}),
    ("get", "/api/v1/projects/{p}/members/", V, None),
    ("post", "/api/v1/projects/{p}/members/", M, {"username": "nobody", "role": "expert"}),
    ("delete", "/api/v1/projects/{p}/members/{m}/", M, None),
    ("get", "/api/v1/projects/{p}/samples/", V, None),
    ("get", "/api/v1/projects/{p}/samples/{s}/", V, None),
    ("get", "/api/v1/projects/{p}/samples/{s}/revisions/", V, None),
    ("post", "/api/v1/projects/{p}/samples/{s}/revisions/", C, {"changes": {"text": "fixed"}}),
    ("get", "/api/v1/projects/{p}/samples/{s}/flags/", V, None),
    ("post", "/api/v1/projects/{p}/samples/{s}/flags/", C, {"kind": "ambiguous"}),
    ("post", "/api/v1/projects/{p}/samples/{fs}/flags/{flag}/resolve/", C, {"resolution": "ok"}),
    ("get", "/api/v1/projects/{p}/queue/", V, None),
    ("patch", "/api/v1/projects/{p}/queue/{item}/", Q, {"priority": 5}),
    ("post", "/api/v1/projects/{p}/queue/next/", L, {}),
    ("post", "/api/v1/projects/{p}/queue/submit/", L, {"sample": "{s}", "label": "great"}),
    ("post", "/api/v1/projects/{p}/queue/submit-next/", L, {"sample": "{s}", "label": "great"}),
    ("get", "/api/v1/projects/{p}/labels/", V, None),
    ("get", "/api/v1/projects/{p}/consensus/", V, None),
    ("post", "/api/v1/projects/{p}/samples/{s}/adjudicate/", A, {"label": "great"}),
    ("get", "/api/v1/projects/{p}/agreement/", V, None),
    ("get", "/api/v1/projects/{p}/imports/", V, None),
    ("post", "/api/v1/projects/{p}/imports/", IMP, {}),
    ("get", "/api/v1/projects/{p}/imports/{job}/", V, None),
    ("get", "/api/v1/projects/{p}/export/?format=csv", E, None),
]


def _client(team, who):
    from django.test import Client

    return (
        Client() if who == "anonymous" else team.client(team.outsider if who == "outsider" else who)
    )


def _expect_allowed(response):
    assert response.status_code not in (401, 403, 404, 405) and response.status_code < 500, (
        response.status_code
    )


def _page_request(client, method, name, keys, data, world):
    kwargs = {arg: world[key] for arg, key in zip(_url_kwargs(keys), keys, strict=True)}
    url = reverse(name, kwargs=kwargs)
    return client.post(url, _fill(data, world)) if method == "post" else client.get(url)


def _url_kwargs(keys):
    names = {
        "p": "project_pk",
        "s": "sample_pk",
        "fs": "sample_pk",
        "m": "membership_pk",
        "flag": "flag_pk",
        "job": "job_pk",
        "it": "pk",
        "tj": "job_pk",
        "key": "pk",
        "alert": "pk",
        "item": "pk",
        "run": "pk",
    }
    return [names[k] for k in keys]


@pytest.mark.parametrize("who", [*ROLES, "outsider", "anonymous"])
@pytest.mark.parametrize(("method", "name", "keys", "capability", "data"), PAGES)
def test_page_access(team, world, who, method, name, keys, capability, data):
    client = _client(team, who)
    response = _page_request(client, method, name, keys, data, world)
    if who == "anonymous":
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))
    elif who == "outsider":
        assert response.status_code == 404
    elif who in CAPABILITIES[capability]:
        _expect_allowed(response)
    else:
        assert response.status_code == 403


def _fill(value, world):
    if isinstance(value, str):
        return value.format(**world)
    if isinstance(value, dict):
        return {k: _fill(v, world) for k, v in value.items()}
    return value


@pytest.mark.parametrize("who", [*ROLES, "outsider", "anonymous"])
@pytest.mark.parametrize(("method", "path", "capability", "data"), API)
def test_api_access(team, world, who, method, path, capability, data):
    client = _client(team, who)
    url = path.format(**world)
    payload = _fill(data, world)
    if payload is not None and method != "get":
        if payload and "sample" in payload:
            payload["sample"] = int(payload["sample"])
        response = getattr(client, method)(url, payload, content_type="application/json")
    else:
        response = getattr(client, method)(url)
    if who == "anonymous":
        assert response.status_code in (401, 403)
    elif who == "outsider":
        assert response.status_code == 404
    elif who in CAPABILITIES[capability]:
        _expect_allowed(response)
    else:
        assert response.status_code == 403
    if response.status_code >= 400 and response.get("Content-Type", "").startswith(
        "application/json"
    ):
        assert "message" in response.json()


def test_api_project_list_shows_nothing_of_other_projects(team, world):
    response = team.client(team.outsider).get("/api/v1/projects/")
    names = [p["name"] for p in response.json()["results"]]
    assert names == ["Someone else's"]


# --- iteration pages -------------------------------------------------------------------
T, D, S = Capability.TRAIN, Capability.DECIDE, Capability.STEER
ITERATION_PAGES = [
    ("get", "iterations:iteration_list", ["p"], V, None),
    ("get", "iterations:iteration_create", ["p"], T, None),
    ("post", "iterations:iteration_create", ["p"], T, {"title": "t", "hypothesis": "h"}),
    ("get", "iterations:iteration_detail", ["p", "it"], V, None),
    ("post", "iterations:iteration_retrain", ["p", "it"], T, {}),
    ("post", "iterations:iteration_decide", ["p", "it"], D, {"verdict": "approve"}),
    ("post", "iterations:iteration_rerun", ["p", "it"], T, {}),
    ("get", "iterations:job_progress", ["p", "it", "tj"], V, None),
    ("post", "iterations:job_cancel", ["p", "it", "tj"], T, {}),
    # Abandoning is for those who train or decide.
    ("post", "iterations:iteration_abandon", ["p", "it"], S, {}),
]


@pytest.fixture
def iteration_world(team, world):
    from iterations.models import (
        DatasetSnapshot,
        EnsembleConfig,
        Iteration,
        ModelVersion,
        TrainingJob,
    )

    project, owner = team.project, team.users["owner"]
    iteration = Iteration.objects.create(
        project=project, title="t", hypothesis="h", opened_by=owner
    )
    snap = DatasetSnapshot.objects.create(project=project, content_hash="0" * 64, row_count=0)
    config = EnsembleConfig.objects.create(
        project=project,
        number=1,
        submodels=[{"key": "text", "name": "tfidf_logreg", "fields": ["text"], "params": {}}],
    )
    version = ModelVersion.objects.create(
        project=project, number=1, snapshot=snap, ensemble=config, iteration=iteration
    )
    job = TrainingJob.objects.create(project=project, version=version, state="running")
    return {**world, "it": iteration.pk, "tj": job.pk}


@pytest.mark.parametrize("who", [*ROLES, "outsider", "anonymous"])
@pytest.mark.parametrize(("method", "name", "keys", "capability", "data"), ITERATION_PAGES)
def test_iteration_page_access(team, iteration_world, who, method, name, keys, capability, data):
    test_page_access(team, iteration_world, who, method, name, keys, capability, data)


# --- iterations API --------------------------------------------------------------------
_P = "/api/v1/projects/{p}"
ITERATION_API = [
    ("get", f"{_P}/iterations/", V, None),
    ("post", f"{_P}/iterations/", T, {"title": "t", "hypothesis": "h"}),
    ("get", f"{_P}/iterations/{{it}}/", V, None),
    ("post", f"{_P}/iterations/{{it}}/retrain/", T, {}),
    ("post", f"{_P}/iterations/{{it}}/decide/", D, {"verdict": "approve"}),
    ("get", f"{_P}/model-versions/", V, None),
    ("get", f"{_P}/model-versions/{{mv}}/", V, None),
    ("post", f"{_P}/model-versions/{{mv}}/rerun/", T, {}),
    ("get", f"{_P}/training-jobs/", V, None),
    ("get", f"{_P}/training-jobs/{{tj}}/", V, None),
    ("post", f"{_P}/training-jobs/{{tj}}/cancel/", T, {}),
    ("get", f"{_P}/reports/", V, None),
    ("get", f"{_P}/decisions/", V, None),
    ("get", f"{_P}/model-settings/", V, None),
    ("patch", f"{_P}/model-settings/", D, {"value_unit": "USD"}),
    ("get", f"{_P}/rule-sets/", V, None),
    ("post", f"{_P}/rule-sets/", L, {"rules": [{"pattern": "fine", "label": "great"}]}),
    ("post", f"{_P}/rule-sets/preview/", V, {"pattern": "fine"}),
    ("get", f"{_P}/ensemble-configs/", V, None),
    (
        "post",
        f"{_P}/ensemble-configs/",
        T,
        {"submodels": [{"name": "tfidf_logreg", "fields": ["text"]}]},
    ),
    ("get", f"{_P}/ensemble-configs/available/", V, None),
    # Slices, gates, compare_last, retrain_every, abandoning: those who train or decide.
    ("post", f"{_P}/iterations/{{it}}/abandon/", S, {}),
    ("patch", f"{_P}/model-settings/", S, {"compare_last": 4}),
]


@pytest.fixture
def iteration_api_world(team, iteration_world):
    from iterations.models import ModelVersion

    return {**iteration_world, "mv": ModelVersion.objects.get(project=team.project).pk}


@pytest.mark.parametrize("who", [*ROLES, "outsider", "anonymous"])
@pytest.mark.parametrize(("method", "path", "capability", "data"), ITERATION_API)
def test_iteration_api_access(team, iteration_api_world, who, method, path, capability, data):
    test_api_access(team, iteration_api_world, who, method, path, capability, data)


# --- monitoring: API keys, ingestion, drift and alerts, surfacing, the queue page -------
MONITORING_PAGES = [
    ("get", "monitoring:api_key_list", ["p"], T, None),
    ("post", "monitoring:api_key_list", ["p"], T, {}),
    ("post", "monitoring:api_key_revoke", ["p", "key"], T, {}),
    ("get", "monitoring:prediction_upload", ["p"], T, None),
    ("post", "monitoring:prediction_upload", ["p"], T, {}),
    ("get", "monitoring:alert_list", ["p"], V, None),
    ("get", "monitoring:monitoring", ["p"], V, None),
    ("post", "monitoring:drift_check_now", ["p"], T, {}),
    ("get", "monitoring:settings", ["p"], V, None),
    ("post", "monitoring:settings", ["p"], T, {}),
    # Acknowledging is for those who train or decide.
    ("post", "monitoring:alert_acknowledge", ["p", "alert"], S, {}),
    ("get", "monitoring:queue", ["p"], V, None),
    ("get", "monitoring:label_errors", ["p"], V, None),
    ("post", "monitoring:queue_strategy_priority", ["p"], Q, {"strategy": "x", "direction": "up"}),
    ("post", "monitoring:queue_item_priority", ["p", "item"], Q, {"priority": "2"}),
    ("get", "monitoring:surface_now", ["p"], T, None),
    ("post", "monitoring:surface_now", ["p"], T, {"budget": "5", "since_days": "7"}),
    ("get", "monitoring:surfacing_run", ["p", "run"], T, None),
]
MONITORING_API = [
    # With a person's login, sending data is for those who train models (experts may not).
    ("post", f"{_P}/predictions/", T, []),
    ("post", f"{_P}/outcomes/", T, []),
    ("post", f"{_P}/feedback/", T, {"request_id": "r", "label": "great", "kind": "confirm"}),
    ("get", f"{_P}/api-keys/", T, None),
    ("post", f"{_P}/api-keys/", T, {"name": "k", "scopes": ["ingest"]}),
    ("post", f"{_P}/api-keys/{{key}}/revoke/", T, {}),
    ("get", f"{_P}/alerts/", V, None),
    ("get", f"{_P}/drift-checks/", V, None),
    ("get", f"{_P}/monitoring-settings/", V, None),
    ("patch", f"{_P}/monitoring-settings/", T, {"share_points": 0.1}),
    ("post", f"{_P}/alerts/{{alert}}/acknowledge/", S, {"note": "seen"}),
    ("get", f"{_P}/surfacing-runs/", T, None),
    ("post", f"{_P}/surfacing-runs/", T, {"budget": 5}),
    ("get", f"{_P}/label-errors/", V, None),
]


@pytest.fixture
def monitoring_world(team, world):
    """An API key, an open drift alert and a surfacing run of the project."""
    from datetime import UTC, datetime

    from monitoring.models import Alert, SurfacingRun
    from monitoring.services.api_keys import api_key_create

    key, _secret = api_key_create(project=team.project, by=None, name="k", scopes=["ingest"])
    when = datetime(2026, 3, 1, tzinfo=UTC)
    alert = Alert.objects.create(
        project=team.project,
        kind="drift",
        field="amount",
        measure="psi",
        value=0.4,
        threshold=0.25,
        sentence="amount moved",
        window_start=when,
        window_end=when,
    )
    run = SurfacingRun.objects.create(project=team.project, budget=5, mix={"random": 1})
    return {**world, "key": key.pk, "alert": alert.pk, "run": run.pk}


@pytest.mark.parametrize("who", [*ROLES, "outsider", "anonymous"])
@pytest.mark.parametrize(("method", "name", "keys", "capability", "data"), MONITORING_PAGES)
def test_monitoring_page_access(team, monitoring_world, who, method, name, keys, capability, data):
    test_page_access(team, monitoring_world, who, method, name, keys, capability, data)


@pytest.mark.parametrize("who", [*ROLES, "outsider", "anonymous"])
@pytest.mark.parametrize(("method", "path", "capability", "data"), MONITORING_API)
def test_monitoring_api_access(team, monitoring_world, who, method, path, capability, data):
    test_api_access(team, monitoring_world, who, method, path, capability, data)


def test_steering_is_for_those_who_train_or_decide():
    steer = CAPABILITIES[Capability.STEER]
    assert steer == CAPABILITIES[Capability.TRAIN] | CAPABILITIES[Capability.DECIDE]
