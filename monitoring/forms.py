from django import forms

from .models import ApiKey


class ApiKeyForm(forms.Form):
    name = forms.CharField(
        max_length=100, help_text="Which client uses it, e.g. “checkout service, production”."
    )
    scopes = forms.MultipleChoiceField(
        choices=ApiKey.Scope.choices,
        widget=forms.CheckboxSelectMultiple,
        initial=[ApiKey.Scope.INGEST],
    )


class PredictionUploadForm(forms.Form):
    file = forms.FileField(
        help_text="CSV, JSON Lines or a JSON list of up to 100,000 prediction logs."
    )


class AlertAcknowledgeForm(forms.Form):
    note = forms.CharField(
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="What you found or did (optional).",
    )


class MonitoringSettingsForm(forms.Form):
    """The settings page; the service checks the values (one set of messages
    for the page and the API). An empty threshold switches that alert off."""

    psi_threshold = forms.FloatField(
        required=False,
        label="Population stability index above",
        help_text="Numbers and categories. 0.1–0.25 is a moderate shift, above 0.25 a major one.",
    )
    share_points = forms.FloatField(
        required=False,
        label="Class or category share moving by more than",
        help_text="A fraction: 0.05 is 5 points (and the chi-square test must agree).",
    )
    oov_increase = forms.FloatField(
        required=False,
        label="Unseen words rising by more than",
        help_text="A fraction, above the share new text of the training kind brings.",
    )
    centroid_distance = forms.FloatField(
        required=False,
        label="Text centroid distance above",
        help_text="Cosine distance of the average TF-IDF vectors, 0 to 1.",
    )
    email_alerts = forms.BooleanField(
        required=False,
        label="E-mail new alerts to the owners and data scientists",
    )
    surfacing_budget = forms.IntegerField(
        label="Samples per surfacing run", help_text="How many samples one run adds to the queue."
    )
    surfacing_every_hours = forms.IntegerField(
        required=False,
        label="Surface by itself every (hours)",
        help_text="Empty: only when a data scientist asks.",
    )

    def __init__(self, *args, strategies=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.strategies = list(strategies)
        for strategy in self.strategies:
            self.fields[f"mix_{strategy}"] = forms.FloatField(
                required=False, label=strategy.replace("_", " ")
            )

    def mix_fields(self):
        return [self[f"mix_{s}"] for s in self.strategies]

    def plain_fields(self):
        return [f for f in self if not f.name.startswith("mix_")]

    def changes(self) -> dict:
        """The settings as the service takes them; on an invalid form, only
        the fields that cleaned (the service checks their ranges too)."""
        data = {name: value for name, value in self.cleaned_data.items() if name not in self.errors}
        mix = {s: data.pop(f"mix_{s}", None) for s in self.strategies}
        if not any(f"mix_{s}" in self.errors for s in self.strategies):
            data["surfacing_mix"] = {s: v for s, v in mix.items() if v is not None}
        return data
