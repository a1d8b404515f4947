"""Model versions and the evidence behind them.

Lineage runs label → snapshot → model version → regression report →
decision. Snapshots, artifacts, reports and decisions are written once and
never edited: a new turn of the loop makes new rows.
"""

from django.conf import settings
from django.db import models


class ModelSettings(models.Model):
    """What the product manager and data scientists set once per project."""

    project = models.OneToOneField(
        "labelling.Project", on_delete=models.CASCADE, related_name="model_settings"
    )
    value_unit = models.CharField(max_length=32, default="EUR")
    # {"true class": {"predicted class": gain (negative = cost)}}, per prediction.
    gain_matrix = models.JSONField(default=dict, blank=True)
    useful_baseline = models.FloatField(
        null=True,
        blank=True,
        help_text="Value per 1,000 predictions the model must beat to be worth running.",
    )
    slice_fields = models.JSONField(default=list, blank=True)
    gates = models.JSONField(default=list, blank=True)
    compare_last = models.PositiveSmallIntegerField(
        default=3, help_text="Earlier versions re-scored beside candidate and production."
    )
    retrain_every = models.PositiveIntegerField(
        null=True, blank=True, help_text="Retrain automatically after this many new labels."
    )

    def __str__(self):
        return f"Model settings of {self.project}"


class EnsembleConfig(models.Model):
    """A version of the project's ensemble: which sub-models, with which settings."""

    class Combiner(models.TextChoices):
        STACKING = "stacking", "Stacking (logistic regression on out-of-fold probabilities)"
        SOFT_VOTING = "soft_voting", "Weighted soft voting"

    project = models.ForeignKey(
        "labelling.Project", on_delete=models.CASCADE, related_name="ensemble_configs"
    )
    number = models.PositiveIntegerField()
    # [{"key": "text", "name": "tfidf_logreg", "fields": ["review"], "params": {...}}]
    submodels = models.JSONField()
    combiner = models.CharField(max_length=12, choices=Combiner.choices, default="stacking")
    weights = models.JSONField(default=dict, blank=True)
    note = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "number"], name="ensembleconfig_unique")
        ]

    def __str__(self):
        return f"{self.project} ensemble v{self.number}"


class KeywordRuleSet(models.Model):
    """Rules written by domain experts (pattern → class), versioned like code."""

    project = models.ForeignKey(
        "labelling.Project", on_delete=models.CASCADE, related_name="rule_sets"
    )
    number = models.PositiveIntegerField()
    rules = models.JSONField(default=list)  # [{"pattern": ..., "label": ..., "weight": 1.0}]
    note = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "number"], name="ruleset_unique")]

    def __str__(self):
        return f"{self.project} rules v{self.number}"


class DatasetSnapshot(models.Model):
    """Frozen (sample, revision, label, split) rows. Equal hash = equal data."""

    project = models.ForeignKey(
        "labelling.Project", on_delete=models.CASCADE, related_name="snapshots"
    )
    content_hash = models.CharField(max_length=64)
    row_count = models.PositiveIntegerField()
    class_counts = models.JSONField(default=dict)  # {"train": {...}, "holdout": {...}}
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "content_hash"], name="snapshot_unique_hash")
        ]

    def __str__(self):
        return f"{self.project} snapshot {self.content_hash[:10]}"


class SnapshotRow(models.Model):
    snapshot = models.ForeignKey(DatasetSnapshot, on_delete=models.CASCADE, related_name="rows")
    sample = models.ForeignKey("labelling.Sample", on_delete=models.PROTECT, related_name="+")
    revision = models.PositiveIntegerField()
    label = models.ForeignKey("labelling.LabelClass", on_delete=models.PROTECT, related_name="+")
    split = models.CharField(max_length=8)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["snapshot", "sample"], name="snapshotrow_unique")
        ]

    def __str__(self):
        return f"{self.sample_id} r{self.revision} → {self.label_id}"


class ModelVersion(models.Model):
    class Status(models.TextChoices):
        TRAINING = "training", "Training"
        FAILED = "failed", "Failed"
        CANDIDATE = "candidate", "Candidate"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"
        CANARY = "canary", "Canary"
        PRODUCTION = "production", "Production"
        RETIRED = "retired", "Retired"

    project = models.ForeignKey(
        "labelling.Project", on_delete=models.CASCADE, related_name="model_versions"
    )
    number = models.PositiveIntegerField()
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children"
    )
    snapshot = models.ForeignKey(DatasetSnapshot, on_delete=models.PROTECT, related_name="+")
    ensemble = models.ForeignKey(EnsembleConfig, on_delete=models.PROTECT, related_name="+")
    rule_set = models.ForeignKey(
        KeywordRuleSet, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # The iteration this version was trained for (None: demo, command line,
    # automatic retrain). An iteration keeps every attempt it made.
    iteration = models.ForeignKey(
        "Iteration", null=True, blank=True, on_delete=models.SET_NULL, related_name="versions"
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.TRAINING)
    seed = models.PositiveIntegerField(default=0)
    library_versions = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "number"], name="modelversion_unique"),
            models.UniqueConstraint(
                fields=["project"],
                condition=models.Q(status="production"),
                name="modelversion_one_production",
            ),
        ]

    def __str__(self):
        return f"{self.project} v{self.number} ({self.status})"


class Artifact(models.Model):
    """One fitted sub-model (or the combiner) of a version: a file, hashed.

    ``source`` points at the artifact of an earlier version when the data
    scientist chose not to retrain this sub-model ("reused from version N").
    """

    COMBINER = "__combiner__"

    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="artifacts")
    key = models.CharField(max_length=64)
    file = models.FileField(upload_to="artifacts/%Y/%m/", blank=True)
    sha256 = models.CharField(max_length=64)
    size_bytes = models.PositiveBigIntegerField()
    source = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="reuses"
    )
    fit_seconds = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["version", "key"], name="artifact_unique_key")
        ]

    def __str__(self):
        return f"{self.version} {self.key}"


class TrainingJob(models.Model):
    """The row owns the job's state; a worker claims it with an update that
    must change exactly one row, so a re-delivered message does nothing."""

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    project = models.ForeignKey(
        "labelling.Project", on_delete=models.CASCADE, related_name="training_jobs"
    )
    version = models.OneToOneField(ModelVersion, on_delete=models.CASCADE, related_name="job")
    refit = models.JSONField(default=list, help_text="Sub-model keys fitted anew.")
    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED)
    progress = models.FloatField(default=0)
    message = models.CharField(max_length=255, blank=True)
    log = models.TextField(blank=True)
    error = models.TextField(blank=True)
    celery_task_id = models.CharField(max_length=64, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    cancel_requested = models.BooleanField(default=False)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"Training {self.version} ({self.state})"


class RegressionReport(models.Model):
    """Candidate vs production vs earlier versions on the same holdout.
    Immutable once written; ``content_hash`` is over the canonical payload."""

    project = models.ForeignKey(
        "labelling.Project", on_delete=models.CASCADE, related_name="reports"
    )
    candidate = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="reports")
    baseline = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    compared = models.ManyToManyField(ModelVersion, related_name="+", blank=True)
    holdout_hash = models.CharField(max_length=64)
    payload = models.JSONField()
    passed = models.BooleanField()
    content_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return f"Report {self.content_hash[:10]} for {self.candidate}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise ValueError("Regression reports are immutable; run the test again instead.")
        super().save(*args, **kwargs)


class Iteration(models.Model):
    class Status(models.TextChoices):
        OPEN = "open", "Open"
        TRAINING = "training", "Training"
        READY = "ready", "Ready for sign-off"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"
        ABANDONED = "abandoned", "Abandoned"

    project = models.ForeignKey(
        "labelling.Project", on_delete=models.CASCADE, related_name="iterations"
    )
    title = models.CharField(max_length=200)
    hypothesis = models.TextField(help_text="The insight being tested.")
    expected_gain = models.TextField(blank=True)
    effort = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    candidate = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="iterations"
    )
    opened_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self):
        return self.title


class Decision(models.Model):
    """A product manager's sign-off, tied to the exact version and report."""

    class Verdict(models.TextChoices):
        APPROVE = "approve", "Approve"
        REJECT = "reject", "Reject"

    iteration = models.ForeignKey(Iteration, on_delete=models.PROTECT, related_name="decisions")
    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="decisions")
    report = models.ForeignKey(RegressionReport, on_delete=models.PROTECT, related_name="+")
    report_hash = models.CharField(max_length=64)
    verdict = models.CharField(max_length=7, choices=Verdict.choices)
    comment = models.TextField(blank=True)
    by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return f"{self.verdict} {self.version} by {self.by}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise ValueError("Decisions are append-only.")
        super().save(*args, **kwargs)
