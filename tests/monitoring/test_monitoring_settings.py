import pytest

from leanml_site.models import AuditEvent
from ml.surfacing import DEFAULT_MIX, STRATEGIES
from monitoring.models import MonitoringSettings
from monitoring.services.settings import (
    SettingsError,
    monitoring_settings_check,
    monitoring_settings_update,
)

URL = "/projects/{}/monitoring/settings/"


def _form(**changes):
    data = {
        "psi_threshold": "0.2",
        "share_points": "0.05",
        "oov_increase": "0.1",
        "centroid_distance": "0.2",
        "surfacing_budget": "50",
        "surfacing_every_hours": "",
        **{f"mix_{s}": "" for s in STRATEGIES},
        "mix_uncertainty": "3",
        "mix_random": "1",
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def test_everyone_in_the_project_reads_the_settings(team):
    for role in team.users:
        response = team.client(role).get(URL.format(team.project.pk))
        assert response.status_code == 200, role
    page = team.client("expert").get(URL.format(team.project.pk)).content.decode()
    assert "you (Domain expert) can read them" in page and "disabled" in page
    assert team.client(team.outsider).get(URL.format(team.project.pk)).status_code == 404
    # The default mix is shown as the one in use.
    page = team.client("owner").get(URL.format(team.project.pk)).content.decode()
    assert f'name="mix_uncertainty" value="{DEFAULT_MIX["uncertainty"]}"' in page
    assert team.client("expert").get(API.format(team.project.pk)).json()["surfacing_budget"] == 100
    # Reading shows the defaults without writing a row.
    assert not MonitoringSettings.objects.filter(project=team.project).exists()


@pytest.mark.parametrize("role", ["data_scientist", "owner"])
def test_data_scientists_and_owners_change_them_with_an_audit_event(team, role):
    response = team.client(role).post(
        URL.format(team.project.pk),
        _form(psi_threshold="", email_alerts="on", surfacing_every_hours="6"),
    )
    assert response.status_code == 302
    row = MonitoringSettings.objects.get(project=team.project)
    assert row.psi_threshold is None  # switched off
    assert row.email_alerts is True
    assert (row.surfacing_budget, row.surfacing_every_hours) == (50, 6)
    assert row.surfacing_mix == {"uncertainty": 3.0, "random": 1.0}
    event = AuditEvent.objects.get(action="monitoring_settings.update")
    assert event.actor == team.users[role]
    assert event.before["psi_threshold"] == 0.25 and event.after["psi_threshold"] is None


@pytest.mark.parametrize("role", ["expert", "product_manager"])
def test_other_roles_cannot_change_them(team, role):
    response = team.client(role).post(URL.format(team.project.pk), _form(surfacing_budget="7"))
    assert response.status_code == 403
    assert not MonitoringSettings.objects.filter(project=team.project, surfacing_budget=7).exists()


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"psi_threshold": "-1"}, "psi_threshold", "-1 is out of range for the population"),
        ({"share_points": "5"}, "share_points", "5 is out of range for the share change"),
        ({"surfacing_budget": "0"}, "surfacing_budget", "0 is not a whole number from 1"),
        ({"surfacing_every_hours": "0"}, "surfacing_every_hours", "0 is not a whole number"),
        ({"mix_random": "-1"}, "mix_random", "The share of &#x27;random&#x27; is -1"),
        ({"mix_uncertainty": "0", "mix_random": "0"}, "__all__", "Mix: the shares add up to 0"),
        ({"centroid_distance": "far"}, "centroid_distance", "Enter a number."),
    ],
)
def test_it_refuses_bad_values_naming_the_field_and_changes_nothing(team, changes, field, words):
    response = team.client("owner").post(URL.format(team.project.pk), _form(**changes))
    assert response.status_code == 400
    page = response.content.decode()
    assert words in page
    assert [field] == list(response.context["form"].errors)
    # The page speaks of its labels, never of the settings' internal names.
    for key in ("psi_threshold:", "share_points:", "surfacing_budget:", "surfacing_mix"):
        assert key not in page
    row = MonitoringSettings.objects.filter(project=team.project).first()
    assert row is None or (row.surfacing_budget, row.psi_threshold) == (100, 0.25)
    assert not AuditEvent.objects.filter(action="monitoring_settings.update").exists()


def test_every_bad_field_is_named_at_once_beside_its_label(team):
    response = team.client("owner").post(
        URL.format(team.project.pk),
        _form(
            psi_threshold="-1",
            share_points="7",
            centroid_distance="far",
            surfacing_budget="0",
            mix_novelty="-2",
        ),
    )
    assert response.status_code == 400
    errors = response.context["form"].errors
    assert set(errors) == {
        "psi_threshold",
        "share_points",
        "centroid_distance",
        "surfacing_budget",
        "mix_novelty",
    }
    assert errors["share_points"] == [
        "7 is out of range for the share change (a fraction: 0.05 is 5 points); give a value "
        "above 0 and at most 1, or leave it empty to switch it off."
    ]
    assert errors["centroid_distance"] == ["Enter a number."]
    assert not MonitoringSettings.objects.filter(project=team.project).exists()


def test_the_service_refuses_unknown_strategies_and_settings(team):
    owner = team.users["owner"]
    with pytest.raises(SettingsError) as error:
        monitoring_settings_update(
            project=team.project, by=owner, changes={"surfacing_mix": {"vibes": 1}}
        )
    assert error.value.field == "surfacing_mix" and "'vibes'" in error.value.message
    with pytest.raises(SettingsError) as error:
        monitoring_settings_update(project=team.project, by=owner, changes={"colour": "red"})
    assert error.value.field == "colour"
    with pytest.raises(SettingsError) as error:
        monitoring_settings_update(
            project=team.project, by=owner, changes={"email_alerts": "yes", "surfacing_budget": 5}
        )
    assert error.value.field == "email_alerts"
    assert error.value.problems == [("email_alerts", "give true or false.")]
    with pytest.raises(SettingsError) as error:
        monitoring_settings_update(
            project=team.project,
            by=owner,
            changes={"psi_threshold": -1, "share_points": 7, "surfacing_mix": {"random": "x"}},
        )
    assert [key for key, _ in error.value.problems] == [
        "psi_threshold",
        "share_points",
        "surfacing_mix.random",
    ]
    # Checked before anything is written: not even the default row was created.
    assert not MonitoringSettings.objects.filter(project=team.project).exists()


def test_whole_number_settings_refuse_fractions_and_only_the_schedule_may_be_empty(team):
    with pytest.raises(SettingsError) as error:
        monitoring_settings_check(
            {"surfacing_budget": None, "surfacing_every_hours": 1.5, "psi_threshold": 0.2}
        )
    assert error.value.problems == [
        ("surfacing_budget", "None is not a number."),
        (
            "surfacing_every_hours",
            "1.5 is not a whole number of hours from 1 to 8760; leave it empty for surfacing "
            "on request only.",
        ),
    ]
    assert monitoring_settings_check(
        {"surfacing_budget": 100_000.0, "surfacing_every_hours": None}
    ) == {"surfacing_budget": 100_000, "surfacing_every_hours": None}
    with pytest.raises(SettingsError) as error:
        monitoring_settings_check({"surfacing_budget": 100_001, "surfacing_every_hours": 8761})
    assert [key for key, _ in error.value.problems] == [
        "surfacing_budget",
        "surfacing_every_hours",
    ]


API = "/api/v1/projects/{}/monitoring-settings/"


def test_the_api_reads_and_patches_the_settings(team):
    url = API.format(team.project.pk)
    body = team.client("expert").get(url).json()
    assert body["psi_threshold"] == 0.25 and body["surfacing_mix"] == {}
    response = team.client("data_scientist").patch(
        url, {"share_points": 0.1, "surfacing_mix": {"random": 1}}, content_type="application/json"
    )
    assert response.status_code == 200
    assert response.json()["share_points"] == 0.1
    assert response.json()["surfacing_mix"] == {"random": 1.0}
    assert response.json()["psi_threshold"] == 0.25  # untouched
    refused = team.client("product_manager").patch(
        url, {"share_points": 0.2}, content_type="application/json"
    )
    assert refused.status_code == 403
    assert team.client(team.outsider).get(url).status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"psi_threshold": "high"}, "psi_threshold"),
        ({"oov_increase": 2}, "oov_increase"),
        ({"surfacing_budget": 2.5}, "surfacing_budget"),
        ({"surfacing_mix": {"random": -1}}, "surfacing_mix"),
        ({"surfacing_mix": ["random"]}, "surfacing_mix"),
        ({"share_points": 0.1, "surfacing_mix": {"guess": 1}}, "surfacing_mix"),
    ],
)
def test_the_api_refuses_bad_settings_naming_the_field(team, body, field):
    response = team.client("owner").patch(
        API.format(team.project.pk), body, content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json()["field"] == field and field in response.json()["message"]
    assert list(response.json()["errors"]) == [field]
    row = MonitoringSettings.objects.filter(project=team.project).first()
    assert row is None or row.share_points == 0.05  # nothing half-done


def test_the_api_names_every_bad_setting_under_its_key(team):
    response = team.client("owner").patch(
        API.format(team.project.pk),
        {"psi_threshold": -1, "share_points": 7},
        content_type="application/json",
    )
    assert response.status_code == 400
    body = response.json()
    assert body["field"] == "psi_threshold"
    assert body["message"].startswith("psi_threshold: -1 is out of range")
    assert body["errors"]["share_points"] == [
        "share_points: 7 is out of range for the share change (a fraction: 0.05 is 5 points); "
        "give a value above 0 and at most 1, or leave it empty to switch it off."
    ]


def test_the_api_refuses_a_body_that_is_not_an_object(team):
    response = team.client("owner").patch(
        API.format(team.project.pk), ["psi_threshold", 0.2], content_type="application/json"
    )
    assert response.status_code == 400
    body = response.json()
    assert (body["message"], body["field"]) == ("Send a JSON object of settings.", None)
    assert body["errors"] == {"non_field_errors": ["Send a JSON object of settings."]}
    assert not MonitoringSettings.objects.filter(project=team.project).exists()
