"""Forms of the iteration pages. They check shape only; the services decide
what is allowed (and their IterationError names the field at fault)."""

from django import forms

from .models import Decision, Iteration


class IterationForm(forms.ModelForm):
    class Meta:
        model = Iteration
        fields = ["title", "hypothesis", "expected_gain", "effort"]
        labels = {"expected_gain": "Expected gain", "effort": "Effort"}
        widgets = {
            "hypothesis": forms.Textarea(attrs={"rows": 4}),
            "expected_gain": forms.Textarea(attrs={"rows": 2}),
        }
        help_texts = {
            "title": "A short name for the backlog.",
            "hypothesis": "The insight being tested, e.g. “short reviews mentioning delivery "
            "are mislabelled as other; relabelling 300 of them lifts recall of great”.",
            "expected_gain": "What you expect to win, in the value metric if you can "
            "(e.g. “+8 EUR per 1,000 predictions”).",
            "effort": "e.g. “2 days labelling”, “S / M / L”.",
        }


class RetrainForm(forms.Form):
    """Which of the ensemble's sub-models to fit anew; the others are reused
    from the parent version."""

    refit = forms.MultipleChoiceField(
        label="Sub-models to refit",
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Unchecked sub-models are reused from the parent version as they are.",
    )

    def __init__(self, *args, submodels=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["refit"].choices = [
            (entry["key"], f"{entry['key']} — {entry['name']} on {', '.join(entry['fields'])}")
            for entry in submodels
        ]
        self.fields["refit"].initial = [entry["key"] for entry in submodels]


class DecisionForm(forms.Form):
    verdict = forms.ChoiceField(choices=Decision.Verdict.choices, widget=forms.RadioSelect)
    comment = forms.CharField(
        required=False,
        max_length=5000,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Required to reject, and to approve when a gate failed.",
    )
    report_hash = forms.CharField(widget=forms.HiddenInput, max_length=64)


class AbandonForm(forms.Form):
    comment = forms.CharField(required=False, max_length=2000)
