from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.urls import reverse

from leanml_site.roles import Role

FIELD_KINDS = ("text", "number", "category")


def validate_field_config(value):
    """``fields`` is a list of {"name", "kind", "shown"} with unique names."""
    if not isinstance(value, list):
        raise ValidationError("fields must be a list of {name, kind, shown} objects.")
    seen = set()
    for index, item in enumerate(value):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
            raise ValidationError(f"fields[{index}] needs a non-empty 'name'.")
        if item.get("kind", "text") not in FIELD_KINDS:
            raise ValidationError(
                f"fields[{index}] ({item['name']}): kind must be one of {', '.join(FIELD_KINDS)}."
            )
        if item["name"] in seen:
            raise ValidationError(f"fields[{index}]: the field name '{item['name']}' is repeated.")
        seen.add(item["name"])


class Project(models.Model):
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    guidelines = models.TextField(blank=True, help_text="Shown to annotators beside every sample.")
    fields = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_field_config],
        help_text='Sample fields in display order: [{"name": "review", "kind": "text", '
        '"shown": true}]. kind is text, number or category.',
    )
    overlap = models.PositiveSmallIntegerField(
        default=1, help_text="How many annotators label each sample."
    )
    holdout_fraction = models.FloatField(
        default=0.2, help_text="Share of samples kept out of training, fixed per sample."
    )
    lease_seconds = models.PositiveIntegerField(
        default=600, help_text="How long a handed-out sample stays reserved for its annotator."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(overlap__gte=1), name="project_overlap_gte_1"
            ),
            models.CheckConstraint(
                condition=models.Q(holdout_fraction__gte=0, holdout_fraction__lt=1),
                name="project_holdout_fraction_range",
            ),
        ]

    def __str__(self):
        return self.name

    def get_absolute_url(self):
        return reverse("labelling:project_detail", args=[self.pk])

    @property
    def shown_fields(self):
        return [f for f in self.fields if f.get("shown", True)]

    @property
    def text_field(self):
        """The first text field: the one search and text models read."""
        return next((f["name"] for f in self.fields if f.get("kind", "text") == "text"), None)

    def text_and_fields(self, data):
        """A sample's ``data`` as the review lists show it: the text field's
        value, and (name, value) for each other shown field."""
        text_field = self.text_field
        text = data.get(text_field, "") if text_field else ""
        fields = [
            (f["name"], data.get(f["name"], ""))
            for f in self.shown_fields
            if f["name"] != text_field
        ]
        return text, fields


class Membership(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=32, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "user"], name="membership_unique_user")
        ]

    def __str__(self):
        return f"{self.user} — {self.get_role_display()} on {self.project}"


class LabelClass(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="label_classes")
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True, help_text="The guideline for this class.")
    hotkey = models.CharField(max_length=1, blank=True)
    colour = models.CharField(max_length=7, default="#4f6df5")
    order = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["order", "id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="labelclass_unique_name"),
            models.UniqueConstraint(
                fields=["project", "hotkey"],
                condition=~models.Q(hotkey=""),
                name="labelclass_unique_hotkey",
            ),
        ]

    def __str__(self):
        return self.name


class Sample(models.Model):
    class Source(models.TextChoices):
        IMPORT = "import", "Import"
        MONITORING = "monitoring", "Monitoring"
        FEEDBACK = "feedback", "Feedback"

    class Split(models.TextChoices):
        TRAIN = "train", "Train"
        HOLDOUT = "holdout", "Holdout"

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        EXCLUDED = "excluded", "Excluded"

    class Consensus(models.TextChoices):
        NONE = "none", "Unlabelled"
        PENDING = "pending", "Waiting for more labels"
        AGREED = "agreed", "Agreed"
        MAJORITY = "majority", "Majority (some disagree)"
        DISPUTED = "disputed", "Disputed (tie)"
        ADJUDICATED = "adjudicated", "Adjudicated"
        GOLD = "gold", "Gold"

    # No index of its own: the unique (project, external_id) index leads with
    # it, and every index an import maintains costs time per row.
    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="samples", db_index=False
    )
    external_id = models.CharField(max_length=255)
    # The current data. Every earlier version is a SampleRevision row; the
    # imported original becomes revision 1 the first time a field is corrected.
    data = models.JSONField(default=dict)
    # Looked up within a project only, through ``sample_by_hash``; an index of
    # its own (two on PostgreSQL: plain and LIKE) made a 1,000,000-row import
    # update two more randomly ordered indexes per row.
    content_hash = models.CharField(max_length=64)
    revision = models.PositiveIntegerField(default=0, help_text="0 = as imported.")
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.IMPORT)
    split = models.CharField(max_length=8, choices=Split.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    # Derived from annotations and adjudications by the consensus service; kept
    # on the row so the browser filters and the snapshot read one table.
    consensus_state = models.CharField(
        max_length=12, choices=Consensus.choices, default=Consensus.NONE
    )
    consensus_label = models.ForeignKey(
        LabelClass, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "external_id"], name="sample_unique_external_id"
            )
        ]
        indexes = [
            models.Index(fields=["project", "consensus_label", "id"], name="sample_by_label"),
            models.Index(fields=["project", "consensus_state", "id"], name="sample_by_consensus"),
            models.Index(fields=["project", "content_hash"], name="sample_by_hash"),
        ]

    def __str__(self):
        return self.external_id

    def get_absolute_url(self):
        return reverse("labelling:sample_detail", args=[self.project_id, self.pk])


class SampleRevision(models.Model):
    """A version of a sample's data. Corrections append; nothing is overwritten."""

    sample = models.ForeignKey(Sample, on_delete=models.CASCADE, related_name="revisions")
    number = models.PositiveIntegerField()
    data = models.JSONField()
    content_hash = models.CharField(max_length=64)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    note = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["sample", "number"]
        constraints = [
            models.UniqueConstraint(fields=["sample", "number"], name="revision_unique_number")
        ]

    def __str__(self):
        return f"{self.sample} r{self.number}"


class Annotation(models.Model):
    """One label (or skip) by one annotator. Append-only: a changed label is a
    new row; an annotator's current label is their latest row for the sample."""

    class Kind(models.TextChoices):
        LABEL = "label", "Label"
        SKIP = "skip", "Skip"

    class Origin(models.TextChoices):
        HUMAN = "human", "Labelled here"
        IMPORT = "import", "Imported"

    # No single-column indexes on project and sample: annotation_by_annotator
    # and annotation_latest lead with them, and every label pays for each
    # index it writes (the labelling round trip in bench/README.md).
    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="annotations", db_index=False
    )
    sample = models.ForeignKey(
        Sample, on_delete=models.CASCADE, related_name="annotations", db_index=False
    )
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="annotations"
    )
    kind = models.CharField(max_length=5, choices=Kind.choices, default=Kind.LABEL)
    label = models.ForeignKey(
        LabelClass, null=True, blank=True, on_delete=models.PROTECT, related_name="annotations"
    )
    origin = models.CharField(max_length=6, choices=Origin.choices, default=Origin.HUMAN)
    seconds = models.FloatField(null=True, blank=True, help_text="Time spent on this label.")
    revision = models.PositiveIntegerField(default=0, help_text="Sample revision labelled.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(models.Q(kind="label", label__isnull=False))
                | models.Q(kind="skip", label__isnull=True),
                name="annotation_label_matches_kind",
            )
        ]
        indexes = [
            models.Index(fields=["sample", "annotator", "-id"], name="annotation_latest"),
            models.Index(fields=["project", "annotator", "-id"], name="annotation_by_annotator"),
        ]

    def __str__(self):
        return f"{self.annotator} → {self.label or 'skip'} on {self.sample}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise ValueError("Annotations are append-only; record a new one instead.")
        super().save(*args, **kwargs)


class Adjudication(models.Model):
    """An expert's or owner's decision on a disputed sample (latest one wins)."""

    sample = models.ForeignKey(Sample, on_delete=models.CASCADE, related_name="adjudications")
    label = models.ForeignKey(LabelClass, on_delete=models.PROTECT, related_name="+")
    by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    gold = models.BooleanField(default=False, help_text="Mark as a reference (gold) answer.")
    note = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return f"{self.sample}: {self.label} by {self.by}"


class Flag(models.Model):
    """A problem with a sample. An open flag excludes it from training."""

    class Kind(models.TextChoices):
        DUPLICATE = "duplicate", "Duplicate of another sample"
        CORRUPT = "corrupt", "Corrupt"
        AMBIGUOUS = "ambiguous", "Ambiguous"
        OUT_OF_SCOPE = "out_of_scope", "Out of scope"

    sample = models.ForeignKey(Sample, on_delete=models.CASCADE, related_name="flags")
    kind = models.CharField(max_length=12, choices=Kind.choices)
    duplicate_of = models.ForeignKey(
        Sample, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    note = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    resolution = models.TextField(blank=True)

    class Meta:
        indexes = [models.Index(fields=["sample", "resolved_at"], name="flag_open")]

    def __str__(self):
        return f"{self.get_kind_display()}: {self.sample}"


class QueueItem(models.Model):
    """A sample waiting for labels, with why it is here.

    ``claims`` counts the annotators holding a live lease plus those who have
    labelled it; it lives on the row so the "next" query can skip full items
    and PostgreSQL re-checks it under ``FOR UPDATE SKIP LOCKED``.

    An open item whose sample is flagged is *held* (``sample_flag``): the
    "next" query, which only hands out ``open`` items, passes it over, and it
    becomes open again with its priority and reason when the sample's last
    flag is resolved (``flag_resolve``). A held item still counts as the
    sample's place in the queue: at most one item per sample is open or held.
    """

    class State(models.TextChoices):
        OPEN = "open", "Open"
        HELD = "held", "Held (flagged)"
        DONE = "done", "Done"

    # The states in which a sample counts as queued.
    QUEUED = (State.OPEN, State.HELD)

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="queue_items")
    sample = models.ForeignKey(Sample, on_delete=models.CASCADE, related_name="queue_items")
    priority = models.FloatField(default=0)
    strategy = models.CharField(max_length=32, default="imported")
    score = models.FloatField(null=True, blank=True)
    reason = models.TextField(default="Imported")
    state = models.CharField(max_length=4, choices=State.choices, default=State.OPEN)
    claims = models.PositiveSmallIntegerField(default=0)
    labels_done = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["sample"],
                condition=models.Q(state__in=["open", "held"]),
                name="queueitem_one_queued",
            )
        ]
        indexes = [
            models.Index(
                fields=["project", "-priority", "id"],
                condition=models.Q(state="open"),
                name="queue_next",
            )
        ]

    def __str__(self):
        return f"{self.sample} ({self.priority}: {self.reason})"


class Lease(models.Model):
    """An annotator's reservation of a queue item until ``expires_at``."""

    # Covered by lease_unique_user (item, user) and lease_expiry / lease_by_user
    # (project, ...): no single-column indexes of their own.
    item = models.ForeignKey(
        QueueItem, on_delete=models.CASCADE, related_name="leases", db_index=False
    )
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+", db_index=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["item", "user"], name="lease_unique_user")]
        indexes = [
            models.Index(fields=["project", "expires_at"], name="lease_expiry"),
            models.Index(fields=["project", "user"], name="lease_by_user"),
        ]

    def __str__(self):
        return f"{self.user} holds {self.item_id} until {self.expires_at:%H:%M:%S}"


class ImportJob(models.Model):
    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    class Policy(models.TextChoices):
        SKIP = "skip", "Skip samples whose id exists"
        UPDATE = "update", "Update samples whose id exists (as a new revision)"

    class Format(models.TextChoices):
        CSV = "csv", "CSV"
        JSON = "json", "JSON (a list of objects)"
        JSONL = "jsonl", "JSON Lines"
        LABEL_STUDIO = "label_studio", "Label Studio JSON export"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="import_jobs")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    file = models.FileField(upload_to="imports/%Y/%m/")
    original_name = models.CharField(max_length=255)
    format = models.CharField(max_length=12, choices=Format.choices)
    policy = models.CharField(max_length=6, choices=Policy.choices, default=Policy.SKIP)
    id_column = models.CharField(max_length=100, default="id")
    label_column = models.CharField(max_length=100, blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED)
    progress = models.FloatField(default=0)
    message = models.CharField(max_length=255, blank=True)
    error = models.JSONField(null=True, blank=True)
    counts = models.JSONField(default=dict, blank=True)
    celery_task_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self):
        return f"Import {self.pk} of {self.original_name} ({self.state})"

    def get_absolute_url(self):
        return reverse("labelling:import_detail", args=[self.project_id, self.pk])
