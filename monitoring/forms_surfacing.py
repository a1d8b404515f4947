"""Forms of the surfacing pages: "surface now" and the queue's reprioritising."""

from django import forms

from ml.surfacing import DEFAULT_MIX, STRATEGIES

# label_error picks labelled samples for review, not logs for the queue.
MIX_STRATEGIES = [s for s in STRATEGIES if s != "label_error"]
STRATEGY_HELP = {
    "uncertainty": "the model was unsure (top class barely ahead)",
    "disagreement": "the ensemble's sub-models disagree",
    "novelty": "unlike anything in the training data",
    "feedback": "an end user corrected the prediction",
    "random": "a stratified random slice, for unbiased estimates",
}


class SurfaceNowForm(forms.Form):
    budget = forms.IntegerField(min_value=1, max_value=10_000, help_text="Samples to surface.")
    since_days = forms.IntegerField(
        min_value=1, max_value=90, initial=7, label="Logs of the last (days)"
    )

    def __init__(self, *args, mix=None, **kwargs):
        super().__init__(*args, **kwargs)
        mix = mix or DEFAULT_MIX
        for name in MIX_STRATEGIES:
            self.fields[f"mix_{name}"] = forms.FloatField(
                min_value=0,
                required=False,
                initial=mix.get(name, 0),
                label=name,
                help_text=STRATEGY_HELP[name],
            )

    def mix(self):
        # Every share, blanks as 0: all zeros is an error, not "the default mix".
        return {name: self.cleaned_data.get(f"mix_{name}") or 0.0 for name in MIX_STRATEGIES}


class StrategyPriorityForm(forms.Form):
    strategy = forms.CharField(max_length=32)
    direction = forms.ChoiceField(choices=[("up", "Up"), ("down", "Down")])


class ItemPriorityForm(forms.Form):
    priority = forms.FloatField(min_value=-1_000_000, max_value=1_000_000)
