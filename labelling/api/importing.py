"""Import jobs (upload a file, follow its progress) and exports over the API."""

from django.http import StreamingHttpResponse
from django.urls import reverse
from django.utils.http import content_disposition_header
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_view,
)
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from leanml_site.api import PROJECT_PARAM, IdCursorPagination
from leanml_site.roles import Capability

from ..models import ImportJob
from ..permissions import get_project_for_user
from ..services.exporting import FORMATS, export_stream
from ..services.importing import import_job_create, import_job_progress
from .base import ProjectScopedMixin

ID_PARAM = OpenApiParameter("id", int, OpenApiParameter.PATH, description="Import job id")


class ImportErrorSerializer(serializers.Serializer):
    message = serializers.CharField(help_text="What is wrong, and where.")
    row = serializers.IntegerField(
        allow_null=True,
        help_text="1-based data row: the first row after a CSV header (spreadsheet row 2) "
        "or the first object of a JSON / JSON Lines file is row 1.",
    )
    column = serializers.CharField(allow_null=True)
    value = serializers.CharField(allow_null=True, help_text="The offending value (shortened).")
    file = serializers.CharField()


class ImportCountsSerializer(serializers.Serializer):
    rows = serializers.IntegerField(help_text="Data rows in the file.")
    created = serializers.IntegerField(help_text="New samples.")
    updated = serializers.IntegerField(help_text="Existing samples given a new revision.")
    unchanged = serializers.IntegerField(help_text="Existing samples whose data was the same.")
    skipped = serializers.IntegerField(help_text="Rows whose id exists (policy skip).")
    labels = serializers.IntegerField(help_text="Imported labels (annotations).")
    queued = serializers.IntegerField(help_text="New unlabelled samples added to the queue.")
    duplicates = serializers.IntegerField(
        help_text="Rows whose data equals another sample's: exact duplicates to review."
    )


@extend_schema_field(ImportCountsSerializer(allow_null=True))
class CountsField(serializers.JSONField):
    """The counts of a finished job (null before)."""

    def to_representation(self, value):
        return value or None


class ImportJobSerializer(serializers.ModelSerializer):
    created_by = serializers.CharField(source="created_by.username", read_only=True)
    progress = serializers.SerializerMethodField(help_text="0 to 1.")
    message = serializers.SerializerMethodField()
    error = ImportErrorSerializer(allow_null=True, read_only=True)
    counts = CountsField(read_only=True)
    page = serializers.SerializerMethodField(help_text="The job's page in the web app.")

    class Meta:
        model = ImportJob
        fields = [
            "id",
            "original_name",
            "format",
            "policy",
            "id_column",
            "label_column",
            "state",
            "progress",
            "message",
            "error",
            "counts",
            "created_by",
            "created_at",
            "started_at",
            "finished_at",
            "page",
        ]
        read_only_fields = fields

    def get_progress(self, job) -> float:
        return import_job_progress(job)[0]

    def get_message(self, job) -> str:
        return import_job_progress(job)[1]

    def get_page(self, job) -> str:
        return job.get_absolute_url()


class ImportCreateSerializer(serializers.Serializer):
    file = serializers.FileField(
        help_text="CSV, JSON (a list of objects), JSON Lines, or a Label Studio JSON export."
    )
    format = serializers.ChoiceField(
        choices=ImportJob.Format.choices,
        required=False,
        allow_blank=True,
        help_text="Default: from the file name (.csv, .json, .jsonl); a JSON list of tasks "
        "with a `data` object is read as a Label Studio export.",
    )
    policy = serializers.ChoiceField(
        choices=ImportJob.Policy.choices,
        default=ImportJob.Policy.SKIP,
        help_text="What to do with rows whose id is already in the project.",
    )
    id_column = serializers.CharField(max_length=100, default="id")
    label_column = serializers.CharField(
        max_length=100,
        required=False,
        allow_blank=True,
        default="",
        help_text="Optional column of existing labels (class names).",
    )


class ImportFailedSerializer(ImportErrorSerializer):
    field = serializers.CharField(
        allow_null=True, help_text="The column at fault, or `file` when no column is."
    )
    job = ImportJobSerializer(help_text="The failed job, kept for the record.")


class NewestFirstPagination(IdCursorPagination):
    ordering = "-id"


@extend_schema_view(
    list=extend_schema(summary="Import jobs, newest first", parameters=[PROJECT_PARAM]),
    retrieve=extend_schema(
        summary="One import job: state, progress, error or counts",
        parameters=[PROJECT_PARAM, ID_PARAM],
    ),
)
class ImportJobViewSet(
    ProjectScopedMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Anyone in the project may follow imports; data scientists and owners start them."""

    serializer_class = ImportJobSerializer
    queryset = ImportJob.objects.none()
    pagination_class = NewestFirstPagination
    parser_classes = [MultiPartParser, FormParser]

    def get_project_queryset(self, project):
        return ImportJob.objects.filter(project=project).select_related("created_by")

    @extend_schema(
        summary="Import a file (all-or-nothing)",
        description="Files up to the inline limit are imported in the request and come back "
        "`succeeded`, or `failed` with a 400 naming the row, column and value (nothing is "
        "written; the failed job is kept). Larger files come back `queued`: poll the job until "
        "it is `succeeded` or `failed`.",
        parameters=[PROJECT_PARAM],
        request={"multipart/form-data": ImportCreateSerializer},
        responses={
            201: ImportJobSerializer,
            400: OpenApiResponse(
                ImportFailedSerializer,
                description="The file cannot be imported; or a bad form field "
                "(then `{message, field, errors}`).",
            ),
        },
    )
    def create(self, request, *args, **kwargs):
        project = self.get_project(Capability.IMPORT)
        form = ImportCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        job = import_job_create(
            project=project,
            by=request.user,
            uploaded_file=data["file"],
            fmt=data.get("format") or None,
            policy=data["policy"],
            id_column=data["id_column"],
            label_column=data.get("label_column", ""),
        )
        body = ImportJobSerializer(job).data
        location = reverse("import-job-detail", args=[project.pk, job.pk])
        if job.state == ImportJob.State.FAILED:
            error = job.error or {}
            return Response(
                {
                    "message": error.get("message", job.message),
                    "field": error.get("column") or "file",
                    "row": error.get("row"),
                    "column": error.get("column"),
                    "value": error.get("value"),
                    "file": error.get("file", job.original_name),
                    "job": body,
                },
                status=status.HTTP_400_BAD_REQUEST,
                headers={"Location": location},
            )
        return Response(body, status=status.HTTP_201_CREATED, headers={"Location": location})


class _IgnoreFormatQuery(DefaultContentNegotiation):
    """``?format=`` picks the export format here, not a DRF renderer."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


_EXPORT_MEDIA = {
    "csv": "text/csv",
    "jsonl": "application/x-ndjson",
    "label_studio": "application/json",
}


class ExportViewSet(viewsets.ViewSet):
    """Streamed exports of a project's samples, labels and consensus."""

    renderer_classes = [JSONRenderer]
    content_negotiation_class = _IgnoreFormatQuery

    @extend_schema(
        operation_id="v1_projects_export",
        summary="Export samples with labels and consensus",
        description="Streams every sample with its split, status, consensus and each "
        "annotator's current label. `csv` (formula-safe cells), `jsonl` (one object per "
        "sample) or `label_studio` (a JSON list of tasks with `choices` annotations; a settled "
        "consensus is the annotation marked `ground_truth`).",
        parameters=[
            PROJECT_PARAM,
            OpenApiParameter(
                "format",
                str,
                enum=list(FORMATS),
                default="csv",
                description="Export format.",
            ),
        ],
        responses={
            (200, media): OpenApiResponse(
                OpenApiTypes.BINARY, description="The export, streamed as an attachment."
            )
            for media in _EXPORT_MEDIA.values()
        },
    )
    def list(self, request, project_pk=None):
        project = get_project_for_user(request.user, project_pk, capability=Capability.EXPORT)
        fmt = request.query_params.get("format", "csv")
        try:
            result = export_stream(project=project, fmt=fmt)
        except ValueError as exc:
            raise ValidationError({"format": str(exc)}) from None
        response = StreamingHttpResponse(result.chunks, content_type=result.content_type)
        response["Content-Disposition"] = content_disposition_header(True, result.filename)
        return response
