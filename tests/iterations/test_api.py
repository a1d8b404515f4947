"""The iterations API: iterations and their verbs, versions, jobs, reports,
decisions, model settings, rule sets and ensemble configurations."""

from unittest import mock

import pytest
from django.test import Client

from iterations.models import (
    Decision,
    EnsembleConfig,
    Iteration,
    KeywordRuleSet,
    ModelSettings,
    ModelVersion,
    TrainingJob,
)
from iterations.services.iterations import iteration_create, iteration_retrain
from iterations.services.regression import regression_run
from iterations.services.training import training_run
from iterations.tasks import regression_run_task, training_run_task
from leanml_site.models import AuditEvent

from .conftest import client_for

# Every test here may write artifacts: each in its own folder.
pytestmark = pytest.mark.usefixtures("media")


def url(crew, tail=""):
    return f"/api/v1/projects/{crew.project.pk}/{tail}"


def trained_iteration(crew):
    """An iteration whose candidate really trained (in process)."""
    iteration = iteration_create(
        project=crew.project, by=crew.users["data_scientist"], title="T", hypothesis="H"
    )
    with mock.patch.object(training_run_task, "delay"):
        job = iteration_retrain(iteration=iteration, by=crew.users["data_scientist"], queue=False)
    training_run(job_id=job.pk)
    iteration.refresh_from_db()
    return iteration


def report_for(iteration):
    """The candidate's real regression report (run in process)."""
    report = regression_run(version_id=iteration.candidate_id)
    iteration.refresh_from_db()
    assert iteration.status == Iteration.Status.READY
    return report


# --- iterations ---------------------------------------------------------------------------


def test_a_data_scientist_opens_an_iteration(crew):
    response = client_for(crew, "data_scientist").post(
        url(crew, "iterations/"),
        {"title": "Sarcasm", "hypothesis": "Rules catch sarcasm", "effort": "1 day"},
        content_type="application/json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["status"], body["candidate"], body["opened_by"]) == (
        "open",
        None,
        "r-data_scientist",
    )
    assert Iteration.objects.get(pk=body["id"]).hypothesis == "Rules catch sarcasm"


def test_opening_an_iteration_without_hypothesis_names_the_field(crew):
    response = client_for(crew, "owner").post(
        url(crew, "iterations/"),
        {"title": "x", "hypothesis": "  "},
        content_type="application/json",
    )
    assert response.status_code == 400
    assert response.json()["field"] == "hypothesis"
    assert not Iteration.objects.exists()


@pytest.mark.parametrize("who", ["expert", "product_manager"])
def test_only_training_roles_open_iterations(crew, who):
    response = client_for(crew, who).post(
        url(crew, "iterations/"), {"title": "x", "hypothesis": "y"}, content_type="application/json"
    )
    assert response.status_code == 403
    assert not Iteration.objects.exists()


def test_iterations_filter_by_status_and_refuse_unknown_ones(crew):
    for title in ("a", "b"):
        iteration_create(project=crew.project, by=crew.users["owner"], title=title, hypothesis="h")
    Iteration.objects.filter(title="b").update(status=Iteration.Status.ABANDONED)
    client = client_for(crew, "expert")
    titles = [
        i["title"] for i in client.get(url(crew, "iterations/?status=open")).json()["results"]
    ]
    assert titles == ["a"]
    both = client.get(url(crew, "iterations/?status=open&status=abandoned")).json()["results"]
    assert [i["title"] for i in both] == ["b", "a"]  # newest first
    bad = client.get(url(crew, "iterations/?status=nonsense"))
    assert bad.status_code == 400
    assert bad.json()["field"] == "status"


def test_retrain_queues_a_job_for_the_iteration(crew, django_capture_on_commit_callbacks):
    iteration = iteration_create(
        project=crew.project, by=crew.users["owner"], title="t", hypothesis="h"
    )
    with (
        mock.patch.object(training_run_task, "delay") as delay,
        django_capture_on_commit_callbacks(execute=True),
    ):
        delay.return_value.id = "task-9"
        response = client_for(crew, "data_scientist").post(
            url(crew, f"iterations/{iteration.pk}/retrain/"),
            {"refit": ["text"], "seed": 3},
            content_type="application/json",
        )
    assert response.status_code == 202, response.json()
    job = TrainingJob.objects.get(pk=response.json()["id"])
    delay.assert_called_once_with(job.pk)
    assert (job.state, job.version.seed, job.version.iteration_id) == ("queued", 3, iteration.pk)
    iteration.refresh_from_db()
    assert (iteration.status, iteration.candidate_id) == ("training", job.version_id)


def test_retrain_with_an_unknown_sub_model_names_refit_and_creates_nothing(crew):
    iteration = iteration_create(
        project=crew.project, by=crew.users["owner"], title="t", hypothesis="h"
    )
    response = client_for(crew, "owner").post(
        url(crew, f"iterations/{iteration.pk}/retrain/"),
        {"refit": ["nope"]},
        content_type="application/json",
    )
    assert response.status_code == 400
    assert response.json()["field"] == "refit"
    assert "nope" in response.json()["message"]
    assert not ModelVersion.objects.exists() and not TrainingJob.objects.exists()


@pytest.mark.parametrize("who", ["expert", "product_manager"])
def test_only_training_roles_retrain(crew, who):
    iteration = iteration_create(
        project=crew.project, by=crew.users["owner"], title="t", hypothesis="h"
    )
    response = client_for(crew, who).post(
        url(crew, f"iterations/{iteration.pk}/retrain/"), {}, content_type="application/json"
    )
    assert response.status_code == 403
    assert not TrainingJob.objects.exists()


def test_a_product_manager_approves_on_the_report_read(crew):
    iteration = trained_iteration(crew)
    report = report_for(iteration)
    response = client_for(crew, "product_manager").post(
        url(crew, f"iterations/{iteration.pk}/decide/"),
        {"verdict": "approve", "report_hash": report.content_hash},
        content_type="application/json",
    )
    assert response.status_code == 201, response.json()
    decision = Decision.objects.get()
    assert (decision.verdict, decision.report_hash, decision.by.username) == (
        "approve",
        report.content_hash,
        "r-product_manager",
    )
    assert ModelVersion.objects.get(pk=iteration.candidate_id).status == "approved"
    listed = client_for(crew, "expert").get(url(crew, "decisions/")).json()["results"]
    assert [(d["verdict"], d["version"], d["report_hash"]) for d in listed] == [
        ("approve", iteration.candidate.number, report.content_hash)
    ]


def test_a_decision_on_a_stale_report_or_without_reason_is_refused(crew):
    iteration = trained_iteration(crew)
    report_for(iteration)
    client = client_for(crew, "owner")
    stale = client.post(
        url(crew, f"iterations/{iteration.pk}/decide/"),
        {"verdict": "approve", "report_hash": "0" * 64},
        content_type="application/json",
    )
    assert (stale.status_code, stale.json()["field"]) == (400, "report_hash")
    no_reason = client.post(
        url(crew, f"iterations/{iteration.pk}/decide/"),
        {"verdict": "reject", "comment": "  "},
        content_type="application/json",
    )
    assert (no_reason.status_code, no_reason.json()["field"]) == (400, "comment")
    bad_verdict = client.post(
        url(crew, f"iterations/{iteration.pk}/decide/"),
        {"verdict": "maybe"},
        content_type="application/json",
    )
    assert (bad_verdict.status_code, bad_verdict.json()["field"]) == (400, "verdict")
    assert not Decision.objects.exists()
    assert ModelVersion.objects.get(pk=iteration.candidate_id).status == "candidate"


@pytest.mark.parametrize("who", ["expert", "data_scientist"])
def test_only_deciding_roles_decide(crew, who):
    iteration = trained_iteration(crew)
    report_for(iteration)
    response = client_for(crew, who).post(
        url(crew, f"iterations/{iteration.pk}/decide/"),
        {"verdict": "approve"},
        content_type="application/json",
    )
    assert response.status_code == 403
    assert not Decision.objects.exists()


def test_an_expert_may_not_abandon_an_iteration(crew):
    iteration = iteration_create(
        project=crew.project, by=crew.users["owner"], title="t", hypothesis="h"
    )
    response = client_for(crew, "expert").post(
        url(crew, f"iterations/{iteration.pk}/abandon/"), {}, content_type="application/json"
    )
    assert response.status_code == 403
    assert Iteration.objects.get(pk=iteration.pk).status == "open"


def test_abandon_and_a_decided_iteration_cannot_be_abandoned(crew):
    iteration = iteration_create(
        project=crew.project, by=crew.users["owner"], title="t", hypothesis="h"
    )
    client = client_for(crew, "product_manager")
    response = client.post(
        url(crew, f"iterations/{iteration.pk}/abandon/"),
        {"comment": "superseded"},
        content_type="application/json",
    )
    assert (response.status_code, response.json()["status"]) == (200, "abandoned")
    Iteration.objects.filter(pk=iteration.pk).update(status=Iteration.Status.APPROVED)
    again = client.post(
        url(crew, f"iterations/{iteration.pk}/abandon/"), {}, content_type="application/json"
    )
    assert again.status_code == 400
    assert Iteration.objects.get(pk=iteration.pk).status == "approved"


def test_an_outsider_sees_no_iteration(crew):
    iteration = iteration_create(
        project=crew.project, by=crew.users["owner"], title="t", hypothesis="h"
    )
    client = client_for(crew, "outsider")
    assert client.get(url(crew, "iterations/")).status_code == 404
    assert client.get(url(crew, f"iterations/{iteration.pk}/")).status_code == 404
    assert Client().get(url(crew, "iterations/")).status_code in (401, 403)


# --- versions, jobs, reports ----------------------------------------------------------------


def test_model_versions_show_lineage_and_reused_artifacts(crew):
    first = trained_iteration(crew)
    with mock.patch.object(training_run_task, "delay"):
        job = iteration_retrain(
            iteration=first, by=crew.users["owner"], refit=["fields"], queue=False
        )
    training_run(job_id=job.pk)
    versions = client_for(crew, "expert").get(url(crew, "model-versions/")).json()["results"]
    assert [v["number"] for v in versions] == [2, 1]
    second = versions[0]
    assert (second["parent"], second["status"], second["ensemble"]) == (1, "candidate", 1)
    assert second["snapshot"]["content_hash"] == versions[1]["snapshot"]["content_hash"]
    artifacts = {a["key"]: a for a in second["artifacts"]}
    assert artifacts["text"]["reused_from"] == 1
    assert artifacts["fields"]["reused_from"] is None
    assert len(artifacts["fields"]["sha256"]) == 64 and artifacts["fields"]["size_bytes"] > 0
    assert second["job"]["state"] == "succeeded"
    assert "scikit-learn" in second["library_versions"]
    only = client_for(crew, "expert").get(url(crew, "model-versions/?status=training"))
    assert only.json()["results"] == []


def test_a_failed_job_shows_its_traceback_to_data_scientists_only(crew):
    iteration = iteration_create(
        project=crew.project, by=crew.users["owner"], title="t", hypothesis="h"
    )
    with mock.patch.object(training_run_task, "delay"):
        job = iteration_retrain(iteration=iteration, by=crew.users["owner"], queue=False)
    TrainingJob.objects.filter(pk=job.pk).update(
        state="failed", message="boom", error="Traceback: ValueError: boom"
    )
    path = url(crew, f"training-jobs/{job.pk}/")
    assert client_for(crew, "data_scientist").get(path).json()["error"].startswith("Traceback")
    seen_by_pm = client_for(crew, "product_manager").get(path).json()
    assert (seen_by_pm["state"], seen_by_pm["message"], seen_by_pm["error"]) == (
        "failed",
        "boom",
        None,
    )


def test_cancelling_a_queued_job(crew):
    iteration = iteration_create(
        project=crew.project, by=crew.users["owner"], title="t", hypothesis="h"
    )
    with mock.patch.object(training_run_task, "delay"):
        job = iteration_retrain(iteration=iteration, by=crew.users["owner"], queue=False)
    path = url(crew, f"training-jobs/{job.pk}/cancel/")
    assert client_for(crew, "product_manager").post(path).status_code == 403
    response = client_for(crew, "data_scientist").post(path)
    assert (response.status_code, response.json()["state"]) == (200, "cancelled")
    assert TrainingJob.objects.get(pk=job.pk).state == "cancelled"


def test_reports_list_without_payload_and_retrieve_with_it(crew):
    iteration = trained_iteration(crew)
    report = report_for(iteration)
    client = client_for(crew, "expert")
    listed = client.get(url(crew, "reports/")).json()["results"]
    assert [(r["candidate"], r["content_hash"], r["compared"]) for r in listed] == [
        (iteration.candidate.number, report.content_hash, [iteration.candidate.number])
    ]
    assert "payload" not in listed[0]
    one = client.get(url(crew, f"reports/{report.pk}/")).json()
    assert one["payload"]["schema"] == 1 and one["payload"]["candidate"] == 1
    assert one["passed"] == report.passed and one["baseline"] is None
    assert client.get(url(crew, "reports/?candidate=99")).json()["results"] == []


def test_a_data_scientist_reruns_the_regression_test(crew):
    iteration = trained_iteration(crew)
    version = iteration.candidate
    with mock.patch.object(regression_run_task, "delay") as delay:
        response = client_for(crew, "data_scientist").post(
            url(crew, f"model-versions/{version.pk}/rerun/")
        )
        assert (
            client_for(crew, "product_manager")
            .post(url(crew, f"model-versions/{version.pk}/rerun/"))
            .status_code
            == 403
        )
    assert response.status_code == 202, response.json()
    assert response.json()["version"] == version.number
    delay.assert_called_once_with(version.pk, crew.users["data_scientist"].pk)
    assert AuditEvent.objects.filter(action="regression.request").count() == 1


def test_a_rerun_of_an_untrained_version_or_with_the_broker_down_is_refused(crew):
    iteration = iteration_create(
        project=crew.project, by=crew.users["owner"], title="t", hypothesis="h"
    )
    with mock.patch.object(training_run_task, "delay"):
        job = iteration_retrain(iteration=iteration, by=crew.users["owner"], queue=False)
    client = client_for(crew, "owner")
    with mock.patch.object(regression_run_task, "delay") as delay:
        untrained = client.post(url(crew, f"model-versions/{job.version_id}/rerun/"))
    assert untrained.status_code == 400 and "training" in untrained.json()["message"]
    delay.assert_not_called()
    training_run(job_id=job.pk)
    with mock.patch.object(regression_run_task, "delay", side_effect=OSError("refused")):
        down = client.post(url(crew, f"model-versions/{job.version_id}/rerun/"))
    assert down.status_code == 400 and "unreachable" in down.json()["message"]
    assert not AuditEvent.objects.filter(action="regression.request").exists()


# --- model settings -----------------------------------------------------------------------


def test_model_settings_read_with_defaults_and_what_the_role_may_change(crew):
    body = client_for(crew, "expert").get(url(crew, "model-settings/")).json()
    assert (body["value_unit"], body["gain_matrix"], body["compare_last"]) == ("EUR", {}, 3)
    assert body["editable"] == []
    assert body["classes"] == ["great", "other"]
    pm = client_for(crew, "product_manager").get(url(crew, "model-settings/")).json()
    assert set(pm["editable"]) == {
        "value_unit",
        "gain_matrix",
        "useful_baseline",
        "slice_fields",
        "gates",
        "compare_last",
        "retrain_every",
    }
    ds = client_for(crew, "data_scientist").get(url(crew, "model-settings/")).json()
    assert set(ds["editable"]) == {"slice_fields", "gates", "compare_last", "retrain_every"}


def test_a_product_manager_sets_the_value_metric(crew):
    response = client_for(crew, "product_manager").patch(
        url(crew, "model-settings/"),
        {
            "value_unit": "USD",
            "gain_matrix": {"great": {"great": 2, "other": -1}, "other": {"great": -5}},
            "useful_baseline": 100,
        },
        content_type="application/json",
    )
    assert response.status_code == 200, response.json()
    settings = ModelSettings.objects.get(project=crew.project)
    assert settings.gain_matrix == {
        "great": {"great": 2.0, "other": -1.0},
        "other": {"great": -5.0},
    }
    assert (settings.value_unit, settings.useful_baseline) == ("USD", 100.0)
    event = AuditEvent.objects.get(action="model_settings.update")
    assert event.after["value_unit"] == "USD" and event.actor.username == "r-product_manager"


def test_a_data_scientist_may_not_set_the_value_metric(crew):
    response = client_for(crew, "data_scientist").patch(
        url(crew, "model-settings/"),
        {"compare_last": 5, "value_unit": "USD"},
        content_type="application/json",
    )
    assert response.status_code == 403
    assert "value_unit" in response.json()["message"]
    assert not ModelSettings.objects.exists()  # nothing half-done


@pytest.mark.parametrize("who", ["data_scientist", "product_manager", "owner"])
def test_training_and_deciding_roles_set_the_loop_settings(crew, who):
    response = client_for(crew, who).patch(
        url(crew, "model-settings/"),
        {"slice_fields": ["product"], "compare_last": 5, "retrain_every": 50},
        content_type="application/json",
    )
    assert response.status_code == 200, response.json()
    settings = ModelSettings.objects.get(project=crew.project)
    assert (settings.slice_fields, settings.compare_last, settings.retrain_every) == (
        ["product"],
        5,
        50,
    )


def test_an_expert_may_not_change_model_settings(crew):
    response = client_for(crew, "expert").patch(
        url(crew, "model-settings/"), {"compare_last": 5}, content_type="application/json"
    )
    assert response.status_code == 403
    assert not ModelSettings.objects.exists()


@pytest.mark.parametrize(
    ("changes", "field", "says"),
    [
        ({"gain_matrix": {"great": {"nope": 1}}}, "gain_matrix", "nope"),
        ({"gain_matrix": {"great": {"other": "lots"}}}, "gain_matrix", "number"),
        ({"gain_matrix": [1, 2]}, "gain_matrix", "object"),
        ({"slice_fields": ["colour"]}, "slice_fields", "colour"),
        ({"retrain_every": 0}, "retrain_every", "at least 1"),
        ({"compare_last": -1}, "compare_last", "0 to 20"),
        ({"useful_baseline": "high"}, "useful_baseline", "number"),
        ({"gates": {"gate": "x"}}, "gates", "list of objects"),
        ({"gates": [{"gate": "max_recall_drop", "points": -1}]}, "gates", "max_recall_drop"),
        ({"gates": [{"gate": "speed"}]}, "gates", "unknown gate 'speed'"),
        ({"gates": [{"gate": "value_not_worse", "margin": 0}]}, "gates", "needs a value metric"),
        ({"colour": "red"}, "colour", "colour"),
    ],
)
def test_bad_settings_name_the_field_and_change_nothing(crew, changes, field, says):
    before = {"compare_last": 4}
    client = client_for(crew, "owner")
    client.patch(url(crew, "model-settings/"), before, content_type="application/json")
    response = client.patch(
        url(crew, "model-settings/"),
        {"compare_last": 9, **changes},
        content_type="application/json",
    )
    assert response.status_code == 400, response.json()
    assert response.json()["field"] == field
    assert says in response.json()["message"]
    assert ModelSettings.objects.get(project=crew.project).compare_last == 4


# --- rule sets ------------------------------------------------------------------------------


def test_an_expert_saves_rules_as_new_versions(crew):
    client = client_for(crew, "expert")
    first = client.post(
        url(crew, "rule-sets/"),
        {"rules": [{"pattern": "delicious", "label": "great"}], "note": "first"},
        content_type="application/json",
    )
    assert first.status_code == 201, first.json()
    second = client.post(
        url(crew, "rule-sets/"),
        {
            "rules": [
                {"pattern": "delicious", "label": "great", "weight": 2},
                {"pattern": r"\bstale\b", "label": "other", "regex": True},
            ]
        },
        content_type="application/json",
    )
    assert second.status_code == 201, second.json()
    assert [s.number for s in KeywordRuleSet.objects.order_by("number")] == [1, 2]
    assert KeywordRuleSet.objects.get(number=2).rules == [
        {"pattern": "delicious", "label": "great", "weight": 2.0},
        {"pattern": r"\bstale\b", "label": "other", "weight": 1.0, "regex": True},
    ]
    listed = client.get(url(crew, "rule-sets/")).json()["results"]
    assert [r["number"] for r in listed] == [2, 1]
    assert listed[0]["rules"][1]["regex"] is True
    assert AuditEvent.objects.filter(action="rule_set.create").count() == 2


@pytest.mark.parametrize(
    ("rules", "field", "says"),
    [
        (
            [{"pattern": "ok", "label": "great"}, {"pattern": "", "label": "great"}],
            "rules.2",
            "Rule 2",
        ),
        ([{"pattern": "ok", "label": "nope"}], "rules.1", "nope"),
        ([{"pattern": "(", "label": "great", "regex": True}], "rules.1", "regular expression"),
        ([{"pattern": "ok", "label": "great", "weight": -1}], "rules.1", "positive"),
        ([{"pattern": "ok", "label": "great", "colour": 1}], "rules.1", "unknown key"),
        ("not a list", "rules", "list"),
    ],
)
def test_bad_rules_name_the_rule_and_save_nothing(crew, rules, field, says):
    response = client_for(crew, "owner").post(
        url(crew, "rule-sets/"), {"rules": rules}, content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json()["field"] == field
    assert says in response.json()["message"]
    assert not KeywordRuleSet.objects.exists()


def test_saving_the_same_rules_again_is_refused(crew):
    client = client_for(crew, "owner")
    rules = {"rules": [{"pattern": "yum", "label": "great"}]}
    assert (
        client.post(url(crew, "rule-sets/"), rules, content_type="application/json").status_code
        == 201
    )
    again = client.post(url(crew, "rule-sets/"), rules, content_type="application/json")
    assert again.status_code == 400 and "same as version 1" in again.json()["message"]


def test_a_product_manager_may_not_write_rules(crew):
    response = client_for(crew, "product_manager").post(
        url(crew, "rule-sets/"),
        {"rules": [{"pattern": "yum", "label": "great"}]},
        content_type="application/json",
    )
    assert response.status_code == 403
    assert not KeywordRuleSet.objects.exists()


def test_previewing_a_pattern_counts_matches_by_class(crew):
    response = client_for(crew, "product_manager").post(
        url(crew, "rule-sets/preview/"), {"pattern": "delicious"}, content_type="application/json"
    )
    assert response.status_code == 200, response.json()
    body = response.json()
    texts = [
        (s.data["review"], s.consensus_label.name)
        for s in crew.project.samples.select_related("consensus_label")
    ]
    import re

    expected = [label for text, label in texts if re.search(r"(?<!\w)delicious(?!\w)", text, re.I)]
    assert body["scanned"] == 200
    assert body["matched"] == len(expected) > 0
    counts = {c["label"]: c["count"] for c in body["by_class"]}
    assert counts == {"great": expected.count("great"), "other": expected.count("other")}
    assert 0 < len(body["examples"]) <= 5
    assert not KeywordRuleSet.objects.exists()
    bad = client_for(crew, "expert").post(
        url(crew, "rule-sets/preview/"),
        {"pattern": "(", "regex": True},
        content_type="application/json",
    )
    assert (bad.status_code, bad.json()["field"]) == (400, "pattern")


# --- ensemble configurations --------------------------------------------------------------


def test_a_data_scientist_saves_an_ensemble_configuration(crew):
    response = client_for(crew, "data_scientist").post(
        url(crew, "ensemble-configs/"),
        {
            "submodels": [
                {"key": "text", "name": "tfidf_logreg", "fields": ["review"], "params": {"C": 2.0}},
                {"key": "rules", "name": "keyword_rules", "fields": ["review"]},
            ],
            "combiner": "soft_voting",
            "weights": {"text": 2, "rules": 0.5},
        },
        content_type="application/json",
    )
    assert response.status_code == 201, response.json()
    config = EnsembleConfig.objects.get(project=crew.project, number=2)
    assert [e["key"] for e in config.submodels] == ["text", "rules"]
    assert (config.combiner, config.weights) == ("soft_voting", {"text": 2.0, "rules": 0.5})
    assert response.json()["number"] == 2


@pytest.mark.parametrize(
    ("submodels", "field", "says"),
    [
        ([{"name": "magic", "fields": ["review"]}], "submodels.0.name", "magic"),
        ([{"name": "tfidf_logreg", "fields": ["colour"]}], "submodels.0.fields", "colour"),
        (
            [{"name": "tfidf_logreg", "fields": ["review"], "params": {"depth": 3}}],
            "submodels.0.params",
            "depth",
        ),
        (
            [
                {"name": "tfidf_logreg", "fields": ["review"]},
                {"name": "tfidf_logreg", "fields": ["review"]},
            ],
            "submodels.1.key",
            "twice",
        ),
        ([], "submodels", "at least one"),
    ],
)
def test_bad_ensemble_configurations_name_the_entry(crew, submodels, field, says):
    response = client_for(crew, "owner").post(
        url(crew, "ensemble-configs/"), {"submodels": submodels}, content_type="application/json"
    )
    assert response.status_code == 400, response.json()
    assert response.json()["field"] == field
    assert says in response.json()["message"]
    assert EnsembleConfig.objects.filter(project=crew.project).count() == 1


def test_only_training_roles_save_ensemble_configurations(crew):
    for who in ("expert", "product_manager"):
        response = client_for(crew, who).post(
            url(crew, "ensemble-configs/"),
            {"submodels": [{"name": "tfidf_logreg", "fields": ["review"]}]},
            content_type="application/json",
        )
        assert response.status_code == 403
    assert EnsembleConfig.objects.filter(project=crew.project).count() == 1


def test_available_sub_models_come_from_the_registry(crew):
    body = client_for(crew, "expert").get(url(crew, "ensemble-configs/available/")).json()
    names = {entry["name"]: entry for entry in body}
    assert {"tfidf_logreg", "hist_gbm", "keyword_rules"} <= set(names)
    assert "C" in names["tfidf_logreg"]["params"]


def test_a_gain_that_is_not_finite_is_refused(crew):
    # JSON bodies cannot carry NaN (the parser refuses it); the page's form can.
    from iterations.services.settings import SettingsError, model_settings_update

    with pytest.raises(SettingsError, match="finite") as caught:
        model_settings_update(
            project=crew.project,
            by=crew.users["owner"],
            changes={"gain_matrix": {"great": {"other": float("nan")}}},
        )
    assert caught.value.field == "gain_matrix"
    assert not ModelSettings.objects.exists()
