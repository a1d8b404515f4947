import json

from django import forms
from django.contrib.auth import get_user_model

from leanml_site.roles import Role

from .models import LabelClass, Project, validate_field_config


class ProjectForm(forms.ModelForm):
    fields_json = forms.CharField(
        label="Sample fields",
        widget=forms.Textarea(attrs={"rows": 4}),
        initial='[{"name": "text", "kind": "text", "shown": true}]',
        help_text='A JSON list, e.g. [{"name": "review", "kind": "text", "shown": true}]; '
        "kind is text, number or category.",
    )

    class Meta:
        model = Project
        fields = ["name", "description", "guidelines", "overlap", "holdout_fraction"]
        widgets = {
            "description": forms.Textarea(attrs={"rows": 2}),
            "guidelines": forms.Textarea(attrs={"rows": 5}),
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["fields_json"].initial = json.dumps(self.instance.fields)
            # The split is fixed once per sample; changing the fraction later
            # would silently move nothing, so it is only set at creation.
            self.fields["holdout_fraction"].disabled = True

    def clean_fields_json(self):
        try:
            value = json.loads(self.cleaned_data["fields_json"])
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc}") from None
        validate_field_config(value)
        return value

    def clean_holdout_fraction(self):
        value = self.cleaned_data["holdout_fraction"]
        if not 0 <= value < 1:
            raise forms.ValidationError("The holdout fraction must be at least 0 and below 1.")
        return value


class LabelClassForm(forms.ModelForm):
    class Meta:
        model = LabelClass
        fields = ["name", "description", "hotkey", "colour", "order"]
        widgets = {
            "colour": forms.TextInput(attrs={"type": "color"}),
            "description": forms.Textarea(attrs={"rows": 3}),
        }

    def __init__(self, *args, project, **kwargs):
        super().__init__(*args, **kwargs)
        self.instance.project = project

    def clean_hotkey(self):
        hotkey = self.cleaned_data["hotkey"]
        if hotkey in {"s", "f", "z", "?"}:
            raise forms.ValidationError(f"'{hotkey}' is taken by the labelling page (s, f, z, ?).")
        return hotkey


class MemberForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=Role.choices)

    def clean_username(self):
        username = self.cleaned_data["username"]
        try:
            return get_user_model().objects.get(username=username)
        except get_user_model().DoesNotExist:
            raise forms.ValidationError(f"No user named '{username}'.") from None
