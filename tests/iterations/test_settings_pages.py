"""The model settings page and the keyword rules page."""

import pytest
from django.test import Client
from django.urls import reverse

from iterations.models import KeywordRuleSet, ModelSettings
from leanml_site.models import AuditEvent

from .conftest import client_for


def settings_url(crew):
    return reverse("iterations:model_settings", kwargs={"project_pk": crew.project.pk})


def rules_url(crew, name="rules"):
    return reverse(f"iterations:{name}", kwargs={"project_pk": crew.project.pk})


def full_form(**overrides):
    """What the page posts for a product manager: every field of the form."""
    form = {
        "value_unit": "EUR",
        "gain_0_0": "1",
        "gain_0_1": "-2",
        "gain_1_0": "-5",
        "gain_1_1": "",
        "useful_baseline": "",
        "slice_fields": ["product"],
        "compare_last": "3",
        "retrain_every": "",
        "gate_max_recall_drop": "1",
        "gate_max_recall_drop_value": "5",
        "gate_accuracy_not_worse": "1",
        "gate_accuracy_not_worse_value": "1",
    }
    form.update(overrides)
    return {k: v for k, v in form.items() if v is not None}


# --- model settings -----------------------------------------------------------------------


def test_a_product_manager_sets_the_gain_matrix_gates_and_slices(crew):
    response = client_for(crew, "product_manager").post(
        settings_url(crew), full_form(useful_baseline="120", retrain_every="40")
    )
    assert response.status_code == 302
    settings = ModelSettings.objects.get(project=crew.project)
    assert settings.gain_matrix == {
        "great": {"great": 1.0, "other": -2.0},
        "other": {"great": -5.0},
    }
    assert settings.useful_baseline == 120.0
    assert settings.slice_fields == ["product"]
    # Accuracy's tolerance is typed in points and stored as a fraction.
    assert settings.gates == [
        {"gate": "max_recall_drop", "points": 5.0},
        {"gate": "accuracy_not_worse", "tolerance": 0.01},
    ]
    assert settings.retrain_every == 40
    assert AuditEvent.objects.filter(action="model_settings.update").count() == 1
    page = client_for(crew, "product_manager").get(settings_url(crew)).content.decode()
    assert 'name="gain_0_1" value="-2"' in page
    assert 'name="gate_max_recall_drop" value="1" checked' in page
    assert 'name="gate_value_not_worse" value="1" checked' not in page
    assert 'name="gate_value_not_worse" value="1" >' in page


def test_a_bad_gain_names_the_cell_and_saves_nothing(crew):
    response = client_for(crew, "owner").post(settings_url(crew), full_form(gain_1_0="lots"))
    assert response.status_code == 400
    page = response.content.decode()
    assert "true &#x27;other&#x27;, predicted &#x27;great&#x27;" in page
    assert 'name="gain_1_0" value="lots"' in page  # what was typed is kept
    assert not ModelSettings.objects.exists()


@pytest.mark.parametrize(
    ("override", "says"),
    [
        ({"compare_last": "99"}, "0 to 20"),
        ({"retrain_every": "0"}, "at least 1"),
        ({"retrain_every": "ten"}, "whole number"),
        ({"gate_max_recall_drop": None, "gate_accuracy_not_worse": None}, "at least one gate"),
        ({"gate_max_recall_drop_value": ""}, "Give the number"),
        ({"value_unit": ""}, "unit"),
    ],
)
def test_bad_settings_are_shown_and_nothing_is_saved(crew, override, says):
    response = client_for(crew, "owner").post(settings_url(crew), full_form(**override))
    assert response.status_code == 400
    assert says in response.content.decode()
    assert not ModelSettings.objects.exists()


def test_a_data_scientist_changes_the_loop_but_not_the_value_metric(crew):
    ModelSettings.objects.create(
        project=crew.project, gain_matrix={"great": {"great": 3.0}}, value_unit="USD"
    )
    client = client_for(crew, "data_scientist")
    page = client.get(settings_url(crew)).content.decode()
    assert 'name="gain_0_0"' not in page and 'name="compare_last"' in page
    response = client.post(
        settings_url(crew),
        full_form(gain_0_0="999", value_unit="GBP", compare_last="5"),
    )
    assert response.status_code == 302
    settings = ModelSettings.objects.get(project=crew.project)
    # The value fields the role may not change are ignored, not saved.
    assert (settings.gain_matrix, settings.value_unit, settings.compare_last) == (
        {"great": {"great": 3.0}},
        "USD",
        5,
    )


def test_an_expert_reads_the_settings_but_may_not_post(crew):
    client = client_for(crew, "expert")
    page = client.get(settings_url(crew))
    assert page.status_code == 200
    assert "Save model settings" not in page.content.decode()
    assert client.post(settings_url(crew), full_form()).status_code == 403
    assert not ModelSettings.objects.exists()


def test_outsiders_and_visitors_get_no_settings_page(crew):
    assert client_for(crew, "outsider").get(settings_url(crew)).status_code == 404
    response = Client().get(settings_url(crew))
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


# --- keyword rules ------------------------------------------------------------------------


def rules_form(rows, note=""):
    form = {"rule_count": str(len(rows)), "note": note}
    for index, row in enumerate(rows):
        pattern, label, weight, *flags = row
        form[f"pattern_{index}"] = pattern
        form[f"label_{index}"] = label
        form[f"weight_{index}"] = weight
        if "regex" in flags:
            form[f"regex_{index}"] = "1"
        if "remove" in flags:
            form[f"remove_{index}"] = "1"
    return form


def test_an_expert_adds_edits_and_removes_rules_as_versions(crew):
    client = client_for(crew, "expert")
    first = client.post(
        rules_url(crew),
        rules_form(
            [("delicious", "great", "1"), ("stale", "other", "2"), ("", "great", "1")], "start"
        ),
    )
    assert first.status_code == 302
    assert KeywordRuleSet.objects.get(number=1).rules == [
        {"pattern": "delicious", "label": "great", "weight": 1.0},
        {"pattern": "stale", "label": "other", "weight": 2.0},
    ]
    second = client.post(
        rules_url(crew),
        rules_form(
            [
                ("delicious", "great", "3"),
                ("stale", "other", "2", "remove"),
                (r"\bmeh+\b", "other", "1", "regex"),
            ]
        ),
    )
    assert second.status_code == 302
    assert KeywordRuleSet.objects.get(number=2).rules == [
        {"pattern": "delicious", "label": "great", "weight": 3.0},
        {"pattern": r"\bmeh+\b", "label": "other", "weight": 1.0, "regex": True},
    ]
    page = client.get(rules_url(crew)).content.decode()
    assert "Version 2" in page and "Version 1" in page
    assert 'class="removed"><code>stale</code>' in page
    assert 'class="added"><code>delicious</code> → great <span class="muted">×3.0' in page
    assert "Save as version 3" in page


def test_a_bad_rule_is_named_and_nothing_is_saved(crew):
    client = client_for(crew, "data_scientist")
    response = client.post(
        rules_url(crew),
        rules_form([("fine", "great", "1"), ("(", "other", "1", "regex"), ("ok", "other", "x")]),
    )
    assert response.status_code == 400
    page = response.content.decode()
    assert "Rule 2" in page and "regular expression" in page
    assert 'class="has-error"' in page
    assert 'value="fine"' in page  # the form keeps what was typed
    assert not KeywordRuleSet.objects.exists()
    weight = client.post(rules_url(crew), rules_form([("ok", "other", "heavy")]))
    assert weight.status_code == 400 and "weight must be a number" in weight.content.decode()


def test_rule_text_is_escaped(crew):
    client_for(crew, "owner").post(
        rules_url(crew), rules_form([("<script>x</script>", "great", "1")])
    )
    page = client_for(crew, "expert").get(rules_url(crew)).content.decode()
    assert "<script>x</script>" not in page
    assert "&lt;script&gt;x&lt;/script&gt;" in page


def test_a_product_manager_reads_rules_but_may_not_save(crew):
    client_for(crew, "owner").post(rules_url(crew), rules_form([("yum", "great", "1")]))
    client = client_for(crew, "product_manager")
    page = client.get(rules_url(crew)).content.decode()
    assert "<code>yum</code>" in page and 'name="pattern_0"' not in page
    assert client.post(rules_url(crew), rules_form([("yuck", "other", "1")])).status_code == 403
    assert KeywordRuleSet.objects.count() == 1


def test_trying_a_pattern_shows_matches_by_class(crew):
    client = client_for(crew, "product_manager")
    fragment = client.get(
        rules_url(crew, "rules_preview"), {"pattern": "delicious"}, HTTP_HX_REQUEST="true"
    )
    assert fragment.status_code == 200
    html = fragment.content.decode()
    assert 'id="rule-preview"' in html and "of 200 labelled samples match" in html
    # Without htmx the rules page shows the same result.
    plain = client.get(rules_url(crew, "rules_preview"), {"pattern": "delicious"})
    assert plain.status_code == 302
    page = client.get(plain["Location"]).content.decode()
    assert "of 200 labelled samples match" in page
    bad = client.get(
        rules_url(crew, "rules_preview"), {"pattern": "(", "regex": "1"}, HTTP_HX_REQUEST="true"
    )
    assert "invalid regular expression" in bad.content.decode()
    assert not KeywordRuleSet.objects.exists()


def test_the_gate_form_offers_every_gate_the_regression_test_reads():
    from iterations.services.regression import GATE_KEYS
    from iterations.views.settings import GATES

    assert {name: key for name, key, *_ in GATES} == {n: k for n, (k, _) in GATE_KEYS.items()}


def test_a_gate_the_regression_test_would_refuse_is_not_saved(crew):
    # 150 points of accuracy is a tolerance of 1.5, more than everything.
    response = client_for(crew, "owner").post(
        settings_url(crew), full_form(gate_accuracy_not_worse_value="150")
    )
    assert response.status_code == 400
    assert "fraction" in response.content.decode()
    assert not ModelSettings.objects.exists()


def test_the_value_gate_needs_a_value_metric(crew):
    client = client_for(crew, "owner")
    page = client.get(settings_url(crew)).content.decode()
    # No gain matrix yet: the default gates shown leave the value gate off.
    assert 'name="gate_value_not_worse" value="1" checked' not in page
    assert 'name="gate_max_recall_drop" value="1" checked' in page
    response = client.post(
        settings_url(crew),
        full_form(
            gain_0_0="",
            gain_0_1="",
            gain_1_0="",
            gate_value_not_worse="1",
            gate_value_not_worse_value="0",
        ),
    )
    assert response.status_code == 400
    assert "The value gate needs a value metric" in response.content.decode()
    assert not ModelSettings.objects.exists()
    # With a gain matrix in the same form it is accepted.
    response = client.post(
        settings_url(crew), full_form(gate_value_not_worse="1", gate_value_not_worse_value="0")
    )
    assert response.status_code == 302
    assert {"gate": "value_not_worse", "margin": 0.0} in ModelSettings.objects.get().gates
