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
    """One prediction the product made: what it saw, what the model said."""

    project = models.ForeignKey(
        "labelling.Project", on_delete=models.CASCADE, related_name="prediction_logs"
    )
    request_id = models.CharField(max_length=200)
    timestamp = models.DateTimeField(help_text="When the product made the prediction.")
    model_version = models.ForeignKey(
        "iterations.ModelVersion", on_delete=models.PROTECT, related_name="prediction_logs"
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
