"""Iterations, model versions, training jobs, regression reports and decisions."""

import django_filters
from django.db.models import Prefetch
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import (
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response

from labelling.api.base import ProjectScopedMixin
from leanml_site.api import PROJECT_PARAM, ErrorSerializer, refusal
from leanml_site.roles import Capability, role_can

from ..models import (
    Artifact,
    Decision,
    Iteration,
    ModelVersion,
    RegressionReport,
    TrainingJob,
)
from ..services.iterations import (
    IterationError,
    iteration_abandon,
    iteration_create,
    iteration_decide,
    iteration_retrain,
)
from ..services.regression import RegressionError, regression_request
from ..services.training import TrainingError, training_cancel
from .common import NewestFirstPagination

REFUSED = OpenApiResponse(ErrorSerializer, description="Refused: `message` says why.")


# --- serializers --------------------------------------------------------------------------


class TrainingJobSerializer(serializers.ModelSerializer):
    version = serializers.IntegerField(source="version.number", read_only=True)
    requested_by = serializers.CharField(
        source="requested_by.username", read_only=True, allow_null=True
    )
    error = serializers.SerializerMethodField(
        help_text="The error with its traceback; shown to data scientists and owners only "
        "(null for others and when there is none)."
    )

    class Meta:
        model = TrainingJob
        fields = [
            "id",
            "version",
            "state",
            "progress",
            "message",
            "log",
            "error",
            "refit",
            "attempts",
            "cancel_requested",
            "requested_by",
            "created_at",
            "started_at",
            "heartbeat_at",
            "finished_at",
        ]
        read_only_fields = fields

    def get_error(self, job) -> str | None:
        role = self.context.get("role")
        if not job.error or not role_can(role, Capability.TRAIN):
            return None
        return job.error


class ArtifactSerializer(serializers.ModelSerializer):
    reused_from = serializers.SerializerMethodField(
        help_text="Version number whose fitted artifact this one reuses; null when fitted anew."
    )

    class Meta:
        model = Artifact
        fields = ["key", "sha256", "size_bytes", "reused_from", "fit_seconds", "created_at"]
        read_only_fields = fields

    def get_reused_from(self, artifact) -> int | None:
        return artifact.source.version.number if artifact.source_id else None


class SnapshotSummarySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    content_hash = serializers.CharField()
    row_count = serializers.IntegerField()
    class_counts = serializers.JSONField(help_text='{"train": {class: n}, "holdout": {...}}')


class ModelVersionSerializer(serializers.ModelSerializer):
    parent = serializers.IntegerField(source="parent.number", read_only=True, allow_null=True)
    snapshot = SnapshotSummarySerializer(read_only=True)
    ensemble = serializers.IntegerField(source="ensemble.number", read_only=True)
    rule_set = serializers.IntegerField(source="rule_set.number", read_only=True, allow_null=True)
    created_by = serializers.CharField(
        source="created_by.username", read_only=True, allow_null=True
    )
    artifacts = ArtifactSerializer(many=True, read_only=True)
    job = serializers.SerializerMethodField(help_text="The training job's id and state.")

    class Meta:
        model = ModelVersion
        fields = [
            "id",
            "number",
            "status",
            "parent",
            "iteration",
            "snapshot",
            "ensemble",
            "rule_set",
            "seed",
            "library_versions",
            "artifacts",
            "job",
            "created_by",
            "created_at",
        ]
        read_only_fields = fields

    def get_job(self, version) -> dict | None:
        job = getattr(version, "job", None)
        return {"id": job.pk, "state": job.state} if job is not None else None


class IterationSerializer(serializers.ModelSerializer):
    candidate = serializers.IntegerField(source="candidate.number", read_only=True, allow_null=True)
    candidate_status = serializers.CharField(
        source="candidate.status", read_only=True, allow_null=True
    )
    opened_by = serializers.CharField(source="opened_by.username", read_only=True)

    class Meta:
        model = Iteration
        fields = [
            "id",
            "title",
            "hypothesis",
            "expected_gain",
            "effort",
            "status",
            "candidate",
            "candidate_status",
            "opened_by",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["status", "created_at", "updated_at"]


class RetrainSerializer(serializers.Serializer):
    refit = serializers.ListField(
        child=serializers.CharField(max_length=64),
        required=False,
        allow_null=True,
        default=None,
        help_text="Sub-model keys to fit anew; the others are reused from the parent version. "
        "Omit or null: refit all.",
    )
    seed = serializers.IntegerField(min_value=0, max_value=2**31 - 1, default=0)


class DecideSerializer(serializers.Serializer):
    verdict = serializers.ChoiceField(choices=Decision.Verdict.choices)
    comment = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        max_length=5000,
        help_text="Required to reject, and to approve when a gate failed.",
    )
    report_hash = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        max_length=64,
        help_text="The content hash of the report you read; refused if a newer report exists.",
    )


class AbandonSerializer(serializers.Serializer):
    comment = serializers.CharField(required=False, allow_blank=True, default="", max_length=5000)


class DecisionSerializer(serializers.ModelSerializer):
    version = serializers.IntegerField(source="version.number", read_only=True)
    by = serializers.CharField(source="by.username", read_only=True)

    class Meta:
        model = Decision
        fields = [
            "id",
            "iteration",
            "version",
            "report",
            "report_hash",
            "verdict",
            "comment",
            "by",
            "created_at",
        ]
        read_only_fields = fields


class ReportSerializer(serializers.ModelSerializer):
    candidate = serializers.IntegerField(source="candidate.number", read_only=True)
    baseline = serializers.IntegerField(source="baseline.number", read_only=True, allow_null=True)
    compared = serializers.SerializerMethodField(help_text="Version numbers scored.")

    class Meta:
        model = RegressionReport
        fields = [
            "id",
            "candidate",
            "baseline",
            "compared",
            "holdout_hash",
            "passed",
            "content_hash",
            "created_at",
        ]
        read_only_fields = fields

    def get_compared(self, report) -> list[int]:
        return sorted((v.number for v in report.compared.all()), reverse=True)


class ReportDetailSerializer(ReportSerializer):
    payload = serializers.JSONField(
        read_only=True,
        help_text="The report, schema 1: versions with metrics, slices, value; the comparison "
        "with bootstrap intervals, McNemar and flipped samples; gates; timings.",
    )

    class Meta(ReportSerializer.Meta):
        fields = [*ReportSerializer.Meta.fields, "payload"]
        read_only_fields = fields


# --- iterations ---------------------------------------------------------------------------


class IterationFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(
        choices=Iteration.Status.choices, help_text="Only iterations in these states."
    )

    class Meta:
        model = Iteration
        fields = ["status"]


@extend_schema(parameters=[PROJECT_PARAM])
@extend_schema_view(
    list=extend_schema(
        summary="Iterations, newest first",
        description="Every member may read them; filter with `?status=open&status=ready`.",
    ),
    retrieve=extend_schema(summary="One iteration"),
    create=extend_schema(
        summary="Open an iteration",
        description="A hypothesis to test (data scientists and owners). Several may be open "
        "at once.",
        responses={201: IterationSerializer, 400: REFUSED},
    ),
)
class IterationViewSet(
    ProjectScopedMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    viewsets.GenericViewSet,
):
    """Iterations: a hypothesis, the versions trained for it, and the sign-off."""

    serializer_class = IterationSerializer
    queryset = Iteration.objects.none()
    filterset_class = IterationFilter
    pagination_class = NewestFirstPagination

    def get_project_queryset(self, project):
        return Iteration.objects.filter(project=project).select_related("candidate", "opened_by")

    def get_object(self):
        return get_object_or_404(
            self.get_project_queryset(self.get_project()), pk=self.kwargs["pk"]
        )

    def _iteration(self, capability):
        project = self.get_project(capability)
        iteration = get_object_or_404(Iteration, project=project, pk=self.kwargs["pk"])
        iteration.project = project
        return iteration

    def perform_create(self, serializer):
        project = self.get_project(Capability.TRAIN)
        try:
            serializer.instance = iteration_create(
                project=project, by=self.request.user, **serializer.validated_data
            )
        except IterationError as error:
            raise refusal(error) from None

    @extend_schema(
        summary="Retrain the iteration's candidate",
        description="Freezes the labelled data, creates the next model version and queues its "
        "training job on the `training` queue (data scientists and owners). Sub-models not "
        "named in `refit` are reused from the parent version. Follow the returned job at "
        "`training-jobs/<id>/`.",
        request=RetrainSerializer,
        responses={202: TrainingJobSerializer, 400: REFUSED},
    )
    @action(detail=True, methods=["post"])
    def retrain(self, request, *args, **kwargs):
        iteration = self._iteration(Capability.TRAIN)
        form = RetrainSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        try:
            job = iteration_retrain(
                iteration=iteration,
                by=request.user,
                refit=form.validated_data["refit"],
                seed=form.validated_data["seed"],
            )
        except TrainingError as error:
            # The one request error training_request names is an unknown refit key.
            raise refusal(error, field="refit" if "sub-model key" in str(error) else None) from None
        except IterationError as error:
            raise refusal(error) from None
        context = {"role": iteration.project.role}
        return Response(TrainingJobSerializer(job, context=context).data, status=202)

    @extend_schema(
        summary="Approve or reject the candidate",
        description="Product managers and owners. The decision is tied to the candidate and its "
        "latest regression report; send the `report_hash` you read so a report re-run in "
        "between is refused rather than signed unseen.",
        request=DecideSerializer,
        responses={201: DecisionSerializer, 400: REFUSED},
    )
    @action(detail=True, methods=["post"])
    def decide(self, request, *args, **kwargs):
        iteration = self._iteration(Capability.DECIDE)
        form = DecideSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        try:
            decision = iteration_decide(iteration=iteration, by=request.user, **form.validated_data)
        except IterationError as error:
            raise refusal(error) from None
        return Response(DecisionSerializer(decision).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="Abandon the iteration",
        description="Data scientists, product managers and owners; a decided iteration "
        "cannot be abandoned.",
        request=AbandonSerializer,
        responses={200: IterationSerializer, 400: REFUSED},
    )
    @action(detail=True, methods=["post"])
    def abandon(self, request, *args, **kwargs):
        iteration = self._iteration(Capability.VIEW)
        role = iteration.project.role
        # As on the iteration page: those who train or decide may drop a hypothesis.
        if not role_can(role, Capability.STEER):
            raise PermissionDenied(
                f"Your role ({iteration.project.role_label}) may not abandon iterations in "
                "this project."
            )
        form = AbandonSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        try:
            iteration = iteration_abandon(
                iteration=iteration, by=request.user, comment=form.validated_data["comment"]
            )
        except IterationError as error:
            raise refusal(error) from None
        return Response(IterationSerializer(iteration).data)


# --- model versions -----------------------------------------------------------------------


class RerunQueuedSerializer(serializers.Serializer):
    version = serializers.IntegerField(help_text="The version number whose test was queued.")
    message = serializers.CharField()


class ModelVersionFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(choices=ModelVersion.Status.choices)

    class Meta:
        model = ModelVersion
        fields = ["status", "iteration"]


@extend_schema(parameters=[PROJECT_PARAM])
@extend_schema_view(
    list=extend_schema(
        summary="Model versions, newest first",
        description="Lineage of each version: parent, snapshot, ensemble and rule set numbers, "
        "and one artifact per sub-model (fitted anew, or reused from an earlier version).",
    ),
    retrieve=extend_schema(summary="One model version"),
)
class ModelVersionViewSet(
    ProjectScopedMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    serializer_class = ModelVersionSerializer
    queryset = ModelVersion.objects.none()
    filterset_class = ModelVersionFilter
    pagination_class = NewestFirstPagination

    def get_project_queryset(self, project):
        return (
            ModelVersion.objects.filter(project=project)
            .select_related("parent", "snapshot", "ensemble", "rule_set", "created_by", "job")
            .prefetch_related(
                Prefetch(
                    "artifacts",
                    queryset=Artifact.objects.select_related("source__version").order_by("key"),
                )
            )
        )

    @extend_schema(
        summary="Run the regression test again",
        description="Data scientists and owners. Queues the test of this version against the "
        "current holdout; the new report appears under `reports/` (an identical one is not "
        "stored twice). Refused for a version that is training or failed, or when the task "
        "queue is unreachable.",
        request=None,
        responses={202: RerunQueuedSerializer, 400: REFUSED},
    )
    @action(detail=True, methods=["post"])
    def rerun(self, request, *args, **kwargs):
        project = self.get_project(Capability.TRAIN)
        version = get_object_or_404(ModelVersion, project=project, pk=kwargs["pk"])
        version.project = project
        try:
            regression_request(version=version, by=request.user)
        except RegressionError as error:
            raise refusal(error) from None
        body = {"version": version.number, "message": "The regression test is queued."}
        return Response(RerunQueuedSerializer(body).data, status=status.HTTP_202_ACCEPTED)


# --- training jobs ------------------------------------------------------------------------


@extend_schema(parameters=[PROJECT_PARAM])
@extend_schema_view(
    list=extend_schema(summary="Training jobs, newest first"),
    retrieve=extend_schema(
        summary="One training job: state, progress, log",
        description="Poll this while a job runs. `error` (with the traceback) is given to data "
        "scientists and owners only.",
    ),
)
class TrainingJobViewSet(
    ProjectScopedMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    serializer_class = TrainingJobSerializer
    queryset = TrainingJob.objects.none()
    pagination_class = NewestFirstPagination
    filterset_fields = ["state"]

    def get_project_queryset(self, project):
        return TrainingJob.objects.filter(project=project).select_related("version", "requested_by")

    def get_serializer_context(self):
        context = super().get_serializer_context()
        if not getattr(self, "swagger_fake_view", False):
            context["role"] = self.get_project().role
        return context

    @extend_schema(
        summary="Cancel a training job",
        description="Data scientists and owners. A queued job ends at once; a running one "
        "stops at its next step. A finished job is left as it is.",
        request=None,
        responses={200: TrainingJobSerializer},
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request, *args, **kwargs):
        project = self.get_project(Capability.TRAIN)
        job = get_object_or_404(TrainingJob, project=project, pk=kwargs["pk"])
        job.project = project
        job = training_cancel(job=job, by=request.user)
        return Response(TrainingJobSerializer(job, context={"role": project.role}).data)


# --- reports and decisions ----------------------------------------------------------------


class ReportFilter(django_filters.FilterSet):
    candidate = django_filters.NumberFilter(
        field_name="candidate__number", help_text="Only reports on this version number."
    )
    passed = django_filters.BooleanFilter()

    class Meta:
        model = RegressionReport
        fields = ["candidate", "passed"]


@extend_schema(parameters=[PROJECT_PARAM])
@extend_schema_view(
    list=extend_schema(
        summary="Regression reports, newest first",
        description="Without their payload; read one report for it.",
    ),
    retrieve=extend_schema(
        summary="One regression report with its payload",
        description="Immutable: `content_hash` is over the payload without its timings.",
    ),
)
class ReportViewSet(
    ProjectScopedMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    serializer_class = ReportSerializer
    queryset = RegressionReport.objects.none()
    filterset_class = ReportFilter
    pagination_class = NewestFirstPagination

    def get_serializer_class(self):
        return ReportDetailSerializer if self.action == "retrieve" else ReportSerializer

    def get_project_queryset(self, project):
        query = (
            RegressionReport.objects.filter(project=project)
            .select_related("candidate", "baseline")
            .prefetch_related("compared")
        )
        return query if self.action == "retrieve" else query.defer("payload")


@extend_schema(parameters=[PROJECT_PARAM])
@extend_schema_view(
    list=extend_schema(
        summary="Sign-off decisions, newest first",
        description="Read-only: each names the version and the report hash it was made on.",
    ),
)
class DecisionViewSet(ProjectScopedMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    serializer_class = DecisionSerializer
    queryset = Decision.objects.none()
    pagination_class = NewestFirstPagination
    filterset_fields = ["iteration", "verdict"]

    def get_project_queryset(self, project):
        return Decision.objects.filter(iteration__project=project).select_related("version", "by")
