"""Production predictions, the ground truth that arrives for them, and the
keys machine clients send them with.

Logs and ground truth meet by ``(project, request_id)`` and never by a
foreign key: feedback for a prediction may arrive before its log (the
product's logging pipeline is often the slower of the two), and both are
kept as they come.
"""

from django.conf import settings
from django.db import models


class ApiKey(models.Model):
    """A project's key for a machine client. Only a hash of the secret is
    kept; the full key (``<prefix>.<secret>``) is shown once, at creation."""

    class Scope(models.TextChoices):
        INGEST = "ingest", "Send prediction logs and outcomes"
        FEEDBACK = "feedback", "Send end-user feedback"

    project = models.ForeignKey(
        "labelling.Project", on_delete=models.CASCADE, related_name="api_keys"
    )
    name = models.CharField(max_length=100)
    # The public half: finds the row in one indexed lookup, and is safe to show.
    prefix = models.CharField(max_length=16, unique=True)
    # SHA-256 of the secret. The secret is 32 random bytes, so a slow
    # password hash would add nothing but time to every API call.
    secret_hash = models.CharField(max_length=64)
    scopes = models.JSONField(default=list)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    last_used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"{self.name} ({self.prefix})"

    @property
    def is_active(self):
        return self.revoked_at is None

    def has_scope(self, scope):
        return scope in self.scopes


class PredictionLog(models.Model):
    """One prediction the product made: what it saw, what the model said.

    The busiest table: millions of rows arrive by COPY. Its two foreign keys
    have no single-column indexes (the composite indexes below lead with
    them) and no database constraints: PostgreSQL checks a constraint row
    by row at COMMIT, which cost a 100,000-row batch more than a second,
    for a project and a handful of versions that are the same on every row.
    Ingestion checks the version numbers and holds the project's and its
    versions' rows FOR KEY SHARE (what each row's check would take) until
    its COMMIT, once per batch; deleting goes through Django, which cascades
    a project's logs and refuses to delete a version that has logs.
    """

    project = models.ForeignKey(
        "labelling.Project",
        on_delete=models.CASCADE,
        related_name="prediction_logs",
        db_index=False,
        db_constraint=False,
    )
    request_id = models.CharField(max_length=200)
    timestamp = models.DateTimeField(help_text="When the product made the prediction.")
    model_version = models.ForeignKey(
        "iterations.ModelVersion",
        on_delete=models.PROTECT,
        related_name="prediction_logs",
        db_index=False,
        db_constraint=False,
    )
    data = models.JSONField(help_text="The features / sample fields the model saw.")
    predicted = models.CharField(max_length=100, help_text="Class name.")
    # {"class name": probability}, every project class present, summing to 1.
    probabilities = models.JSONField()
    # The highest probability, kept as a column: confidence histograms and
    # least-confidence surfacing read it without opening the JSON.
    confidence = models.FloatField()
    latency_ms = models.FloatField(null=True, blank=True)
    segment = models.JSONField(null=True, blank=True)
    received_at = models.DateTimeField()

    class Meta:
        constraints = [
            # Idempotency and the join with ground truth both go through it.
            models.UniqueConstraint(
                fields=["project", "request_id"], name="predictionlog_unique_request"
            )
        ]
        indexes = [
            models.Index(fields=["project", "timestamp"], name="predictionlog_window"),
            models.Index(fields=["model_version", "timestamp"], name="predictionlog_version"),
        ]

    def __str__(self):
        return f"{self.request_id} → {self.predicted}"


class GroundTruth(models.Model):
    """What the true class of a logged (or yet-to-be-logged) request is,
    according to one source. Append-only: a correction is a new row.

    Which row counts (``SOURCE_PRIORITY``): an outcome beats an expert's
    label, which beats end-user feedback; within a source the newest wins.
    An outcome is what actually happened (the refund was granted, the
    flight was late); an expert judges from the same fields the model saw,
    with a guideline; an end user's click is the least controlled (a
    "confirm" can be a reflex), so it counts only where nothing better exists.
    """

    class Source(models.TextChoices):
        FEEDBACK = "feedback", "End-user feedback"
        OUTCOME = "outcome", "Observed outcome"
        EXPERT = "expert", "Expert label"

    class Kind(models.TextChoices):
        CONFIRM = "confirm", "Confirmed the prediction"
        CORRECT = "correct", "Corrected the prediction"

    SOURCE_PRIORITY = {Source.OUTCOME: 3, Source.EXPERT: 2, Source.FEEDBACK: 1}

    project = models.ForeignKey(
        "labelling.Project", on_delete=models.CASCADE, related_name="ground_truth"
    )
    request_id = models.CharField(max_length=200)
    label = models.CharField(max_length=100, help_text="Class name.")
    source = models.CharField(max_length=8, choices=Source.choices)
    kind = models.CharField(max_length=8, choices=Kind.choices, blank=True)
    api_key = models.ForeignKey(
        ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField()

    class Meta:
        indexes = [
            models.Index(fields=["project", "request_id"], name="groundtruth_request"),
            # Incremental metrics read the ground truth that arrived since their last run.
            models.Index(fields=["project", "created_at"], name="groundtruth_arrival"),
        ]

    def __str__(self):
        return f"{self.request_id}: {self.label} ({self.source})"


class MonitoringSettings(models.Model):
    """What a project watches for and how much it surfaces; one row per project."""

    project = models.OneToOneField(
        "labelling.Project", on_delete=models.CASCADE, related_name="monitoring_settings"
    )
    # Drift alert thresholds (see ml.drift.Thresholds); null switches one off.
    psi_threshold = models.FloatField(null=True, blank=True, default=0.25)
    share_points = models.FloatField(
        null=True, blank=True, default=0.05, help_text="A class share moving by more than this."
    )
    oov_increase = models.FloatField(null=True, blank=True, default=0.10)
    centroid_distance = models.FloatField(null=True, blank=True, default=0.2)
    email_alerts = models.BooleanField(default=False)
    # Surfacing: budget per run, the strategy mix (ml.surfacing.DEFAULT_MIX when
    # empty), and how often it runs by itself (hours; null: only on request).
    surfacing_budget = models.PositiveIntegerField(default=100)
    surfacing_mix = models.JSONField(default=dict, blank=True)
    surfacing_every_hours = models.PositiveIntegerField(null=True, blank=True)

    def __str__(self):
        return f"Monitoring settings of {self.project}"


class MonitoringCursor(models.Model):
    """How far the scheduled metrics run has read: the highest log and
    ground-truth ids already folded into the windows. A run reads only rows
    above them, which is what keeps it independent of the logs' total."""

    project = models.OneToOneField(
        "labelling.Project", on_delete=models.CASCADE, related_name="monitoring_cursor"
    )
    logs_through = models.BigIntegerField(default=0)
    truth_through = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self):
        return f"{self.project}: logs ≤ {self.logs_through}, truth ≤ {self.truth_through}"


class MetricWindow(models.Model):
    """One hour or day of one model version's predictions (optionally of one
    segment value), as a mergeable aggregate (``ml.windows.Aggregate``)."""

    class Granularity(models.TextChoices):
        HOUR = "hour", "Hour"
        DAY = "day", "Day"

    project = models.ForeignKey(
        "labelling.Project", on_delete=models.CASCADE, related_name="metric_windows"
    )
    model_version = models.ForeignKey(
        "iterations.ModelVersion", on_delete=models.CASCADE, related_name="metric_windows"
    )
    granularity = models.CharField(max_length=4, choices=Granularity.choices)
    start = models.DateTimeField()
    # "" for all predictions; "<segment field>=<value>" for one segment.
    segment = models.CharField(max_length=200, blank=True, default="")
    aggregate = models.JSONField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "model_version", "granularity", "start", "segment"],
                name="metricwindow_unique",
            )
        ]
        indexes = [
            models.Index(fields=["project", "granularity", "start"], name="metricwindow_range")
        ]

    def __str__(self):
        return f"{self.model_version} {self.granularity} {self.start:%Y-%m-%d %H:00} {self.segment}"


class DriftCheck(models.Model):
    """Production logs of a time window against the training snapshot of the
    model version that served them (``ml.drift`` results as JSON)."""

    project = models.ForeignKey(
        "labelling.Project", on_delete=models.CASCADE, related_name="drift_checks"
    )
    model_version = models.ForeignKey(
        "iterations.ModelVersion", on_delete=models.CASCADE, related_name="drift_checks"
    )
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    n_current = models.PositiveIntegerField()
    n_reference = models.PositiveIntegerField()
    results = models.JSONField(default=list)  # one dict per field / measure
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["project", "window_start"], name="driftcheck_range")]

    def __str__(self):
        return f"Drift {self.model_version} {self.window_start:%Y-%m-%d}"


class Alert(models.Model):
    """A threshold crossed, until a person acknowledges it."""

    class Kind(models.TextChoices):
        DRIFT = "drift", "Drift"
        QUALITY = "quality", "Quality"

    project = models.ForeignKey(
        "labelling.Project", on_delete=models.CASCADE, related_name="alerts"
    )
    kind = models.CharField(max_length=8, choices=Kind.choices)
    field = models.CharField(max_length=200)
    measure = models.CharField(max_length=32)
    value = models.FloatField()
    threshold = models.FloatField()
    sentence = models.TextField()
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    drift_check = models.ForeignKey(
        DriftCheck, null=True, blank=True, on_delete=models.CASCADE, related_name="alerts"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    note = models.TextField(blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["project", "created_at"],
                condition=models.Q(acknowledged_at__isnull=True),
                name="alert_open",
            )
        ]

    def __str__(self):
        return self.sentence[:80]


class SurfacingRun(models.Model):
    """One spend of a labelling budget over recent production logs."""

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    project = models.ForeignKey(
        "labelling.Project", on_delete=models.CASCADE, related_name="surfacing_runs"
    )
    model_version = models.ForeignKey(
        "iterations.ModelVersion",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="surfacing_runs",
    )
    budget = models.PositiveIntegerField()
    mix = models.JSONField(default=dict)
    since = models.DateTimeField(null=True, blank=True, help_text="Logs from this time on.")
    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED)
    message = models.CharField(max_length=255, blank=True)
    counts = models.JSONField(default=dict, blank=True)  # strategy -> samples surfaced
    candidates = models.PositiveIntegerField(default=0)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"Surfacing {self.pk} ({self.state})"


class SurfacedSample(models.Model):
    """Why a production prediction became a sample in the labelling queue."""

    run = models.ForeignKey(SurfacingRun, on_delete=models.CASCADE, related_name="surfaced")
    sample = models.ForeignKey(
        "labelling.Sample", on_delete=models.CASCADE, related_name="surfaced_from"
    )
    prediction_log = models.ForeignKey(
        PredictionLog, on_delete=models.CASCADE, related_name="surfaced_as"
    )
    strategy = models.CharField(max_length=32)
    score = models.FloatField()
    reason = models.TextField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["prediction_log"], name="surfaced_once")]

    def __str__(self):
        return f"{self.prediction_log} → {self.sample} ({self.strategy})"
