"""Monitoring API: prediction logs, feedback and outcomes from the product,
and the project's API keys.

The three ingestion endpoints accept an API key (``Authorization: Api-Key
<prefix>.<secret>``) or a data scientist's / owner's own login or token;
the key endpoints only a person's.
"""

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
from rest_framework.parsers import BaseParser, JSONParser
from rest_framework.response import Response

from labelling.permissions import get_project_for_user
from leanml_site.roles import Capability

from .auth import ApiKeyAuthentication, ApiKeyRateThrottle, get_project_for_client
from .models import ApiKey, GroundTruth
from .services.api_keys import ApiKeyError, api_key_create, api_key_revoke
from .services.ground_truth import feedback_record, outcomes_ingest
from .services.parsing import MAX_BODY_BYTES, IngestError, format_for, read_body
from .services.predictions import CSV_TEXT_COLUMNS, prediction_logs_ingest

PROJECT_PARAM = OpenApiParameter("project_pk", int, OpenApiParameter.PATH, description="Project id")
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
        return Response({"message": error.message, "field": error.field}, status=400)
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
        return Response({"message": error.message, "field": error.field}, status=400)
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
        return Response({"message": "No such API key.", "field": None}, status=404)
    key.project = project
    api_key_revoke(key=key, by=request.user)
    return Response(ApiKeySerializer(key).data)
