import json

from django import forms
from django.contrib.auth import get_user_model

from leanml_site.roles import Role

from .models import LabelClass, Project, validate_field_config
from .services.projects import project_problems


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
        fields_json = self.fields["fields_json"]
        if self.instance.pk:
            fields_json.initial = json.dumps(self.instance.fields)
            fields_json.help_text += ' A field samples hold stays; "shown": false hides it.'
            # The split is fixed once per sample; changing the fraction later
            # would silently move nothing, so it is only set at creation.
            self.fields["holdout_fraction"].disabled = True
        else:
            fields_json.help_text += " [] takes them from the first import."

    def clean_fields_json(self):
        try:
            value = json.loads(self.cleaned_data["fields_json"])
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc}") from None
        validate_field_config(value)
        return value

    def clean(self):
        # The service's bounds, each beside its input; a field in error is
        # then left out of the model's own constraint checks, whose messages
        # name database constraints.
        cleaned = super().clean()
        for field, message in project_problems(cleaned):
            self.add_error(field, message)
        return cleaned


class ProjectCreateForm(ProjectForm):
    label_classes = forms.CharField(
        required=False,
        help_text="Comma separated; hotkeys 1–9 are given in order.",
        widget=forms.TextInput(attrs={"placeholder": "great, other"}),
    )

    def clean_label_classes(self):
        return [n.strip() for n in self.cleaned_data["label_classes"].split(",") if n.strip()]


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


class MemberForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=Role.choices)

    def clean_username(self):
        username = self.cleaned_data["username"]
        try:
            return get_user_model().objects.get(username=username)
        except get_user_model().DoesNotExist:
            raise forms.ValidationError(f"No user named '{username}'.") from None
