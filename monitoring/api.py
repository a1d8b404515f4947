"""Monitoring API: prediction logs, feedback and outcomes from the product,
and the project's API keys.

The three ingestion endpoints accept an API key (``Authorization: Api-Key
<prefix>.<secret>``) or a data scientist's / owner's own login or token;
the key endpoints only a person's.
"""

from django.core.exceptions import PermissionDenied
from django.db.models import F
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
)
from rest_framework import serializers, status
from rest_framework.authentication import SessionAuthentication, TokenAuthentication
from rest_framework.decorators import (
    api_view,
    authentication_classes,
    parser_classes,
    throttle_classes,
)
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.parsers import BaseParser, JSONParser
from rest_framework.response import Response

from labelling.permissions import get_project_for_user
from leanml_site.api import PROJECT_PARAM, ErrorSerializer, refusal
from leanml_site.errors import Refusal
from leanml_site.roles import Capability, role_can

from .auth import ApiKeyAuthentication, ApiKeyRateThrottle, get_project_for_client
from .models import Alert, ApiKey, DriftCheck, GroundTruth
from .services.alerts import AlertError, alert_acknowledge
from .services.api_keys import ApiKeyError, api_key_create, api_key_revoke
from .services.drift import monitoring_settings_get
from .services.ground_truth import feedback_record, outcomes_ingest
from .services.parsing import (
    MAX_BODY_BYTES,
    IngestError,
    cycle_collector_paused,
    format_for,
    read_body,
)
from .services.predictions import CSV_TEXT_COLUMNS, prediction_logs_ingest
from .services.settings import SettingsError, monitoring_settings_update

CLIENT_AUTH = [ApiKeyAuthentication, SessionAuthentication, TokenAuthentication]


class _RawBody(BaseParser):
    """Declares the accepted media types; the body itself is read by
    ``_body`` (request.data is never touched, so no parser runs)."""

    def parse(self, stream, media_type=None, parser_context=None):  # pragma: no cover
        return stream.read()


class _JsonRaw(_RawBody):
    media_type = "application/json"


class _JsonLinesRaw(_RawBody):
    media_type = "application/x-ndjson"


class _CsvRaw(_RawBody):
    media_type = "text/csv"


BULK_PARSERS = [_JsonRaw, _JsonLinesRaw, _CsvRaw]


class CountsSerializer(serializers.Serializer):
    stored = serializers.IntegerField(help_text="Rows stored by this request.")
    already_stored = serializers.IntegerField(
        help_text="Rows whose request id was already stored with the same content."
    )


class RowErrorSerializer(serializers.Serializer):
    row = serializers.IntegerField(
        allow_null=True, help_text="1-based: the first object, JSON line or CSV data row is 1."
    )
    field = serializers.CharField(allow_null=True)
    value = serializers.CharField(allow_null=True, help_text="The offending value (shortened).")
    message = serializers.CharField()


class IngestErrorSerializer(serializers.Serializer):
    message = serializers.CharField(help_text="How many rows are wrong, and the first.")
    field = serializers.CharField(allow_null=True)
    errors = RowErrorSerializer(many=True, help_text="The first 20 row errors, in row order.")
    error_count = serializers.IntegerField()


# The three bodies a bulk endpoint takes (Content-Type decides).
BULK_REQUEST = {
    "application/json": OpenApiTypes.OBJECT,
    "application/x-ndjson": OpenApiTypes.STR,
    "text/csv": OpenApiTypes.STR,
}
BULK_RESPONSES = {
    200: CountsSerializer,
    400: OpenApiResponse(IngestErrorSerializer, description="Rows with errors; nothing stored."),
    413: OpenApiResponse(IngestErrorSerializer, description="More than 100,000 rows."),
    415: OpenApiResponse(IngestErrorSerializer, description="Unsupported Content-Type."),
    429: OpenApiResponse(description="The key's (or user's) rate limit."),
}


def _body(request):
    """The raw body, refusing one too large before reading it."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > MAX_BODY_BYTES:
        raise IngestError(
            f"The body is {length:,} bytes; the limit is {MAX_BODY_BYTES:,}.",
            field="body",
            status=413,
        )
    body = request._request.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        raise IngestError(f"The body is over {MAX_BODY_BYTES:,} bytes.", field="body", status=413)
    return body


def _refused(error):
    return Response(error.as_dict(), status=error.status)


@extend_schema(
    summary="Store production prediction logs (all-or-nothing, idempotent by request id)",
    description=(
        "Body: a JSON list of objects, JSON Lines (`application/x-ndjson`) or CSV "
        "(`text/csv`), up to 100,000 rows. JSON fields: `request_id`, `timestamp` (ISO 8601), "
        "`model_version` (number), `data` (object), `predicted` (class), `probabilities` "
        "(`{class: p}` for every class, summing to 1), optional `latency_ms`, `segment` "
        "(object). CSV: the same scalar columns, `p_<class>` per class, optional "
        "`segment_<name>` columns; every other column is a field of `data`. Re-sending a row "
        "changes nothing; a request id stored with different content is a row error."
    ),
    parameters=[PROJECT_PARAM],
    request=BULK_REQUEST,
    responses=BULK_RESPONSES,
)
@api_view(["POST"])
@authentication_classes(CLIENT_AUTH)
@throttle_classes([ApiKeyRateThrottle])
@parser_classes(BULK_PARSERS)
def predictions(request, project_pk):
    project = get_project_for_client(request, project_pk, scope=ApiKey.Scope.INGEST)
    try:
        fmt = format_for(request.content_type)
        with cycle_collector_paused():
            frame = read_body(_body(request), fmt, csv_text_columns=CSV_TEXT_COLUMNS)
            counts = prediction_logs_ingest(project=project, frame=frame, fmt=fmt)
    except IngestError as error:
        return _refused(error)
    return Response(counts)


@extend_schema(
    summary="Store observed outcomes (ground truth) in bulk (all-or-nothing)",
    description=(
        "Body: JSON list, JSON Lines or CSV of `request_id`, `label` (class name), up to "
        "100,000 rows. The request id need not be logged yet: outcomes join their "
        "prediction log whenever it arrives. An outcome equal to the newest one stored for "
        "its request counts as already stored."
    ),
    parameters=[PROJECT_PARAM],
    request=BULK_REQUEST,
    responses=BULK_RESPONSES,
)
@api_view(["POST"])
@authentication_classes(CLIENT_AUTH)
@throttle_classes([ApiKeyRateThrottle])
@parser_classes(BULK_PARSERS)
def outcomes(request, project_pk):
    project = get_project_for_client(request, project_pk, scope=ApiKey.Scope.INGEST)
    key = request.auth if isinstance(request.auth, ApiKey) else None
    try:
        fmt = format_for(request.content_type)
        with cycle_collector_paused():
            frame = read_body(_body(request), fmt, csv_text_columns=("request_id", "label"))
            counts = outcomes_ingest(
                project=project, frame=frame, api_key=key, by=None if key else request.user
            )
    except IngestError as error:
        return _refused(error)
    return Response(counts)


@extend_schema_field({"type": "string", "pattern": "^(confirm|correct)$"})
class FeedbackKindField(serializers.ChoiceField):
    """No schema enum: enums are named after their field, and the samples'
    flags already have one named "kind" (the schema check would warn)."""


class FeedbackSerializer(serializers.Serializer):
    request_id = serializers.CharField(max_length=200)
    label = serializers.CharField(max_length=100, help_text="The class the end user says is right.")
    kind = FeedbackKindField(
        choices=GroundTruth.Kind.values,
        help_text="`confirm`: the prediction was right; `correct`: the user gave another class.",
    )


class FeedbackStoredSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    request_id = serializers.CharField()
    label = serializers.CharField()
    kind = serializers.CharField()
    created = serializers.BooleanField(help_text="False: the same feedback was already stored.")


@extend_schema(
    summary="End-user feedback on one prediction",
    description="Call it when a user confirms or corrects a prediction in the product. The "
    "request id need not be logged yet: feedback is kept and joins its log when it arrives.",
    parameters=[PROJECT_PARAM],
    request=FeedbackSerializer,
    responses={201: FeedbackStoredSerializer, 200: FeedbackStoredSerializer},
)
@api_view(["POST"])
@authentication_classes(CLIENT_AUTH)
@throttle_classes([ApiKeyRateThrottle])
@parser_classes([JSONParser])
def feedback(request, project_pk):
    project = get_project_for_client(request, project_pk, scope=ApiKey.Scope.FEEDBACK)
    form = FeedbackSerializer(data=request.data)
    form.is_valid(raise_exception=True)
    key = request.auth if isinstance(request.auth, ApiKey) else None
    try:
        row, created = feedback_record(
            project=project,
            api_key=key,
            by=None if key else request.user,
            **form.validated_data,
        )
    except IngestError as error:
        raise refusal(error) from None
    body = {
        "id": row.pk,
        "request_id": row.request_id,
        "label": row.label,
        "kind": row.kind,
        "created": created,
    }
    return Response(body, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class ApiKeySerializer(serializers.ModelSerializer):
    created_by = serializers.CharField(
        source="created_by.username", read_only=True, allow_null=True
    )
    active = serializers.BooleanField(source="is_active", read_only=True)

    class Meta:
        model = ApiKey
        fields = [
            "id",
            "name",
            "prefix",
            "scopes",
            "active",
            "created_by",
            "created_at",
            "revoked_at",
            "last_used_at",
        ]
        read_only_fields = fields


class ApiKeyCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    scopes = serializers.ListField(
        child=serializers.ChoiceField(choices=ApiKey.Scope.choices), allow_empty=False
    )


class ApiKeyCreatedSerializer(ApiKeySerializer):
    key = serializers.CharField(help_text="The full key. Shown this once: it is not stored.")

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "key"]
        read_only_fields = fields


@extend_schema(
    methods=["GET"],
    summary="The project's API keys (secrets are never shown again)",
    parameters=[PROJECT_PARAM],
    responses=ApiKeySerializer(many=True),
)
@extend_schema(
    methods=["POST"],
    summary="Create an API key; the response holds the secret, this once",
    parameters=[PROJECT_PARAM],
    request=ApiKeyCreateSerializer,
    responses={201: ApiKeyCreatedSerializer},
)
@api_view(["GET", "POST"])
def api_keys(request, project_pk):
    project = get_project_for_user(request.user, project_pk, capability=Capability.TRAIN)
    if request.method == "GET":
        keys = ApiKey.objects.filter(project=project).select_related("created_by").order_by("-id")
        return Response(ApiKeySerializer(keys, many=True).data)
    form = ApiKeyCreateSerializer(data=request.data)
    form.is_valid(raise_exception=True)
    try:
        key, full = api_key_create(project=project, by=request.user, **form.validated_data)
    except ApiKeyError as error:
        raise refusal(error) from None
    key.key = full
    return Response(ApiKeyCreatedSerializer(key).data, status=status.HTTP_201_CREATED)


@extend_schema(
    summary="Revoke an API key (at once; it cannot be restored)",
    parameters=[PROJECT_PARAM, OpenApiParameter("pk", int, OpenApiParameter.PATH)],
    request=None,
    responses=ApiKeySerializer,
)
@api_view(["POST"])
def api_key_revoke_view(request, project_pk, pk):
    project = get_project_for_user(request.user, project_pk, capability=Capability.TRAIN)
    key = ApiKey.objects.filter(project=project, pk=pk).select_related("created_by").first()
    if key is None:
        raise NotFound("No such API key.")
    key.project = project
    api_key_revoke(key=key, by=request.user)
    return Response(ApiKeySerializer(key).data)


# --- Drift checks, alerts and the monitoring settings -----------------------------------


class AlertSerializer(serializers.ModelSerializer):
    # A plain string: a schema enum would be named "kind" like the samples' flags'.
    kind = serializers.CharField(read_only=True, help_text="`drift` or `quality`.")
    acknowledged_by = serializers.CharField(
        source="acknowledged_by.username", read_only=True, allow_null=True
    )
    drift_check = serializers.IntegerField(source="drift_check_id", read_only=True, allow_null=True)

    class Meta:
        model = Alert
        fields = [
            "id",
            "kind",
            "field",
            "measure",
            "value",
            "threshold",
            "sentence",
            "window_start",
            "window_end",
            "drift_check",
            "created_at",
            "acknowledged_by",
            "acknowledged_at",
            "note",
        ]
        read_only_fields = fields


class AlertAcknowledgeSerializer(serializers.Serializer):
    note = serializers.CharField(required=False, allow_blank=True, max_length=2000)


class DriftCheckSerializer(serializers.ModelSerializer):
    model_version = serializers.IntegerField(source="model_version.number", read_only=True)
    results = serializers.ListField(
        child=serializers.DictField(),
        read_only=True,
        help_text="One object per field and measure (ml.drift results, with `kind`: numeric, "
        "categorical, text, prediction or label); a field that could not be measured has "
        "`error` instead of numbers.",
    )

    class Meta:
        model = DriftCheck
        fields = [
            "id",
            "model_version",
            "window_start",
            "window_end",
            "n_current",
            "n_reference",
            "results",
            "created_at",
        ]
        read_only_fields = fields


class MonitoringSettingsSerializer(serializers.Serializer):
    """Every field optional on PATCH; null switches a threshold off."""

    psi_threshold = serializers.FloatField(required=False, allow_null=True)
    share_points = serializers.FloatField(required=False, allow_null=True)
    oov_increase = serializers.FloatField(required=False, allow_null=True)
    centroid_distance = serializers.FloatField(required=False, allow_null=True)
    email_alerts = serializers.BooleanField(required=False)
    surfacing_budget = serializers.IntegerField(required=False)
    surfacing_mix = serializers.DictField(
        child=serializers.FloatField(),
        required=False,
        help_text="{strategy: share}; empty for the default mix.",
    )
    surfacing_every_hours = serializers.IntegerField(required=False, allow_null=True)


def _settings_body(row):
    return {name: getattr(row, name) for name in MonitoringSettingsSerializer().fields}


class SuspectSerializer(serializers.Serializer):
    sample = serializers.IntegerField(source="sample.pk", help_text="Sample id.")
    external_id = serializers.CharField(source="sample.external_id")
    data = serializers.JSONField(source="sample.data", help_text="The sample's fields.")
    given = serializers.CharField(help_text="The class it is labelled with.")
    suggested = serializers.CharField(help_text="The class the model finds more likely.")
    score = serializers.FloatField(help_text="How strongly the model disagrees (0 to 1).")
    reason = serializers.CharField()
    labelled_by_you = serializers.BooleanField(
        help_text="You gave this label, so someone else settles it."
    )


class LabelErrorsSerializer(serializers.Serializer):
    model_version = serializers.IntegerField(
        allow_null=True, help_text="The production version that judged the labels."
    )
    problem = serializers.CharField(
        allow_null=True, help_text="Why no label could be judged (no production model, ...)."
    )
    suspects = SuspectSerializer(many=True)


@extend_schema(
    summary="Suspected label errors, strongest first (at most 200)",
    description=(
        "Labelled samples whose class the production model, judging out of fold, finds less "
        "likely than another. Settle one with the sample's adjudicate endpoint and "
        '`"review": "label_error"`: someone who labelled the sample may not.'
    ),
    parameters=[PROJECT_PARAM],
    responses=LabelErrorsSerializer,
)
@api_view(["GET"])
def label_error_list_api(request, project_pk):
    from .services.label_errors import LabelErrorsUnavailable, label_error_suspects

    project = get_project_for_user(request.user, project_pk, capability=Capability.VIEW)
    try:
        version, suspects = label_error_suspects(project=project)
    except LabelErrorsUnavailable as error:
        return Response({"model_version": None, "problem": error.message, "suspects": []})
    for suspect in suspects:
        suspect.labelled_by_you = request.user.pk in suspect.labelled_by
    body = {"model_version": version.number, "problem": None, "suspects": suspects}
    return Response(LabelErrorsSerializer(body).data)


@extend_schema(
    summary="The project's drift alerts, open ones first",
    parameters=[
        PROJECT_PARAM,
        OpenApiParameter(
            "open", bool, OpenApiParameter.QUERY, description="true: only unacknowledged alerts."
        ),
    ],
    responses=AlertSerializer(many=True),
)
@api_view(["GET"])
def alert_list_api(request, project_pk):
    project = get_project_for_user(request.user, project_pk, capability=Capability.VIEW)
    alerts = Alert.objects.filter(project=project).select_related("acknowledged_by")
    if request.query_params.get("open") == "true":
        alerts = alerts.filter(acknowledged_at__isnull=True)
    # Open alerts (no acknowledged_at) first on every database: PostgreSQL
    # sorts NULLs first when descending, SQLite last.
    newest_acknowledged = F("acknowledged_at").desc(nulls_first=True)
    alerts = alerts.order_by(newest_acknowledged, "-window_end", "id")[:500]
    return Response(AlertSerializer(alerts, many=True).data)


@extend_schema(
    summary="Acknowledge an alert (data scientists, product managers, owners)",
    parameters=[PROJECT_PARAM, OpenApiParameter("pk", int, OpenApiParameter.PATH)],
    request=AlertAcknowledgeSerializer,
    responses={200: AlertSerializer, 400: ErrorSerializer, 404: ErrorSerializer},
)
@api_view(["POST"])
def alert_acknowledge_api(request, project_pk, pk):
    project = get_project_for_user(request.user, project_pk, capability=Capability.VIEW)
    if not role_can(project.role, Capability.STEER):
        raise PermissionDenied(
            f"Your role ({project.role_label}) may not acknowledge alerts in this project."
        )
    alert = Alert.objects.filter(project=project, pk=pk).first()
    if alert is None:
        raise NotFound("No such alert.")
    alert.project = project
    form = AlertAcknowledgeSerializer(data=request.data)
    form.is_valid(raise_exception=True)
    try:
        alert_acknowledge(alert=alert, by=request.user, note=form.validated_data.get("note", ""))
    except AlertError as error:
        raise refusal(error) from None
    return Response(AlertSerializer(alert).data)


@extend_schema(
    summary="Drift checks of the project, newest first (at most 100)",
    parameters=[
        PROJECT_PARAM,
        OpenApiParameter(
            "version", int, OpenApiParameter.QUERY, description="Only this model version number."
        ),
    ],
    responses=DriftCheckSerializer(many=True),
)
@api_view(["GET"])
def drift_check_list_api(request, project_pk):
    project = get_project_for_user(request.user, project_pk, capability=Capability.VIEW)
    checks = DriftCheck.objects.filter(project=project).select_related("model_version")
    version = request.query_params.get("version")
    if version is not None:
        if not version.isdigit():
            raise ValidationError({"version": [f"{version!r} is not a version number."]})
        checks = checks.filter(model_version__number=int(version))
    checks = checks.order_by("-window_start", "-id")[:100]
    return Response(DriftCheckSerializer(checks, many=True).data)


@extend_schema(
    methods=["GET"],
    summary="The project's drift thresholds and surfacing plan",
    parameters=[PROJECT_PARAM],
    responses=MonitoringSettingsSerializer,
)
@extend_schema(
    methods=["PATCH"],
    summary="Change some monitoring settings (data scientists and owners; all-or-nothing)",
    parameters=[PROJECT_PARAM],
    request=MonitoringSettingsSerializer,
    responses={200: MonitoringSettingsSerializer, 400: ErrorSerializer},
)
@api_view(["GET", "PATCH"])
def monitoring_settings_api(request, project_pk):
    if request.method == "GET":
        project = get_project_for_user(request.user, project_pk, capability=Capability.VIEW)
        return Response(_settings_body(monitoring_settings_get(project)))
    project = get_project_for_user(request.user, project_pk, capability=Capability.TRAIN)
    if not isinstance(request.data, dict):
        raise refusal(Refusal("Send a JSON object of settings."))
    try:
        # The service checks types and ranges itself: one set of messages
        # (naming the field) for the page and the API.
        row = monitoring_settings_update(
            project=project, by=request.user, changes=dict(request.data)
        )
    except SettingsError as error:
        # Every bad setting at once, each under its key.
        raise ValidationError(error.errors()) from None
    return Response(_settings_body(row))


# --- Surfacing runs ---------------------------------------------------------------------


class SurfacingRunSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    state = serializers.CharField(read_only=True, help_text="queued, running, succeeded, failed.")
    model_version = serializers.IntegerField(
        source="model_version.number", read_only=True, allow_null=True
    )
    budget = serializers.IntegerField(read_only=True)
    mix = serializers.DictField(child=serializers.FloatField(), read_only=True)
    since = serializers.DateTimeField(read_only=True)
    counts = serializers.DictField(
        child=serializers.IntegerField(), read_only=True, help_text="Samples surfaced per strategy."
    )
    candidates = serializers.IntegerField(read_only=True)
    message = serializers.CharField(read_only=True)
    requested_by = serializers.CharField(
        source="requested_by.username", read_only=True, allow_null=True
    )
    created_at = serializers.DateTimeField(read_only=True)
    finished_at = serializers.DateTimeField(read_only=True, allow_null=True)


class SurfacingRequestSerializer(serializers.Serializer):
    budget = serializers.IntegerField(
        required=False, help_text="Samples to surface (default: the project's setting)."
    )
    mix = serializers.DictField(
        child=serializers.FloatField(),
        required=False,
        help_text="Share per strategy (uncertainty, disagreement, novelty, feedback, random); "
        "default: the project's setting.",
    )
    since = serializers.DateTimeField(
        required=False, help_text="Logs from this time on (default: the last 7 days)."
    )


@extend_schema(
    methods=["GET"],
    summary="The project's surfacing runs, newest first (at most 50)",
    parameters=[PROJECT_PARAM],
    responses=SurfacingRunSerializer(many=True),
)
@extend_schema(
    methods=["POST"],
    summary="Surface now: queue a run that fills the labelling queue (data scientists, owners)",
    parameters=[PROJECT_PARAM],
    request=SurfacingRequestSerializer,
    responses={202: SurfacingRunSerializer, 400: ErrorSerializer},
)
@api_view(["GET", "POST"])
def surfacing_runs_api(request, project_pk):
    from .models import SurfacingRun
    from .services.surfacing import SurfacingError, surfacing_request

    project = get_project_for_user(request.user, project_pk, capability=Capability.TRAIN)
    if request.method == "GET":
        runs = SurfacingRun.objects.filter(project=project).select_related(
            "model_version", "requested_by"
        )
        return Response(SurfacingRunSerializer(runs.order_by("-id")[:50], many=True).data)
    form = SurfacingRequestSerializer(data=request.data)
    form.is_valid(raise_exception=True)
    try:
        run = surfacing_request(project=project, by=request.user, **form.validated_data)
    except SurfacingError as error:
        raise refusal(error) from None
    return Response(SurfacingRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)
