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
