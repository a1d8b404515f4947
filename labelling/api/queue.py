"""The work queue over the API: next / submit for annotators, the open items and
their priorities for data scientists, and the append-only labels."""

import contextlib
import functools
import json
import math

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import exceptions, mixins, serializers, status, viewsets
from rest_framework.authentication import TokenAuthentication, get_authorization_header
from rest_framework.authtoken.models import Token
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from leanml_site.api import PROJECT_PARAM, IdCursorPagination, refusal
from leanml_site.roles import Capability

from ..models import Annotation, QueueItem, Sample
from ..permissions import (
    MEMBERSHIP_COLUMNS,
    MEMBERSHIP_JOIN,
    get_project_for_user,
    remember_membership,
)
from ..services import raw
from ..services.annotations import (
    AnnotationError,
    annotation_submit,
    annotation_submit_and_next,
    label_class_resolve,
)
from ..services.queue import queue_item_update, queue_next
from .base import ProjectScopedMixin

ID_PARAM = OpenApiParameter("id", int, OpenApiParameter.PATH, description="Queue item id")


class QueueSampleSerializer(serializers.ModelSerializer):
    class Meta:
        model = Sample
        fields = ["id", "external_id", "data", "revision", "split", "status"]
        read_only_fields = fields


class QuickTokenAuthentication(TokenAuthentication):
    """DRF's token authentication (same answers and errors), with the token,
    its user and the user's membership of the URL's project read by one
    hand-written query: scripts call next/submit once per label, and the
    ORM's token query plus the membership query cost more than the rest of
    the request. ``get_project_for_user`` still decides access, from that row.
    """

    def authenticate(self, request):
        try:
            self.project_pk = int(request.parser_context["kwargs"]["project_pk"])
        except (KeyError, TypeError, ValueError, AttributeError):
            self.project_pk = None
        return super().authenticate(request)

    def authenticate_credentials(self, key):
        return token_user(key, self.project_pk)


def token_user(key, project_pk=None):
    """(user, token) for an API token, or AuthenticationFailed with DRF's
    messages; with ``project_pk`` the user's membership of that project is
    read in the same query (see ``permissions.remember_membership``)."""
    user_model = get_user_model()
    with_project = project_pk is not None and 0 < project_pk < 1 << 63
    sql = _token_sql(with_project)
    params = {"key": key, "project": project_pk} if with_project else {"key": key}
    with raw.prepared_cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        raise exceptions.AuthenticationFailed("Invalid token.")
    n_token, n_user = len(Token._meta.concrete_fields), len(user_model._meta.concrete_fields)
    token = raw.instance(Token, row[:n_token])
    token.user = user = raw.instance(user_model, row[n_token : n_token + n_user])
    if not user.is_active:
        raise exceptions.AuthenticationFailed("User inactive or deleted.")
    if with_project:
        remember_membership(user, project_pk, row[n_token + n_user :])
    return (user, token)


@functools.cache
def _token_sql(with_project):
    user_model = get_user_model()
    select = f"SELECT {raw.columns(Token, 't')}, {raw.columns(user_model, 'u')}"
    joins = f" FROM {Token._meta.db_table} t JOIN {user_model._meta.db_table} u ON u.id = t.user_id"
    if with_project:
        select += f", {MEMBERSHIP_COLUMNS}"
        joins += MEMBERSHIP_JOIN.format(user="u")
    return f"{select}{joins} WHERE t.key = %(key)s"


class QueueItemSerializer(serializers.ModelSerializer):
    external_id = serializers.CharField(source="sample.external_id", read_only=True)

    class Meta:
        model = QueueItem
        fields = [
            "id",
            "sample",
            "external_id",
            "priority",
            "strategy",
            "score",
            "reason",
            "state",
            "claims",
            "labels_done",
            "created_at",
        ]
        read_only_fields = fields


class QueueItemUpdateSerializer(serializers.Serializer):
    priority = serializers.FloatField(required=False, help_text="Higher is handed out first.")
    reason = serializers.CharField(
        required=False, max_length=2000, help_text="Why the item is (now) in the queue."
    )

    def validate(self, attrs):
        if not attrs:
            raise ValidationError({"priority": "Give a new priority and/or reason."})
        return attrs


class NextRequestSerializer(serializers.Serializer):
    exclude = serializers.ListField(
        child=serializers.IntegerField(min_value=1),
        required=False,
        max_length=10,
        help_text="Queue item ids the client already holds (e.g. the one on screen when "
        "prefetching the following sample).",
    )


class NextSerializer(serializers.Serializer):
    lease = serializers.IntegerField(source="pk", help_text="Lease id.")
    expires_at = serializers.DateTimeField(
        help_text="Until then the sample is reserved for you; submit later and it still counts."
    )
    item = QueueItemSerializer()
    sample = QueueSampleSerializer(source="item.sample")


class SubmitSerializer(serializers.Serializer):
    sample = serializers.IntegerField(help_text="Sample id.")
    label = serializers.CharField(
        required=False,
        allow_null=True,
        max_length=100,
        help_text="Label class id or name. Leave out when skipping.",
    )
    skip = serializers.BooleanField(default=False, help_text="Skip the sample instead.")
    seconds = serializers.FloatField(
        required=False, allow_null=True, min_value=0, help_text="Time spent on the sample."
    )


class SubmitNextSerializer(SubmitSerializer):
    exclude = serializers.ListField(
        child=serializers.IntegerField(min_value=1),
        required=False,
        max_length=10,
        help_text="Queue item ids not to hand out next (as for next).",
    )


class AnnotationSerializer(serializers.ModelSerializer):
    external_id = serializers.CharField(source="sample.external_id", read_only=True)
    annotator = serializers.CharField(source="annotator.username", read_only=True)
    label_name = serializers.CharField(source="label.name", read_only=True, allow_null=True)
    # A plain string in the schema: an enum named "kind" would collide with the flag kinds.
    kind = serializers.CharField(read_only=True, help_text="'label' or 'skip'.")

    class Meta:
        model = Annotation
        fields = [
            "id",
            "sample",
            "external_id",
            "annotator",
            "annotator_id",
            "kind",
            "label",
            "label_name",
            "origin",
            "seconds",
            "revision",
            "created_at",
        ]
        read_only_fields = fields


class SubmitNextResultSerializer(serializers.Serializer):
    annotation = AnnotationSerializer(help_text="The label (or skip) just recorded.")
    next = NextSerializer(
        allow_null=True,
        help_text="The sample to label next, as next hands it out; null when nothing is "
        "left for you.",
    )


class QueueCursorPagination(IdCursorPagination):
    # What will be handed out first comes first; ties keep the queue's order.
    ordering = ("-priority", "id")


@extend_schema_view(
    list=extend_schema(
        summary="Queue items, highest priority first",
        parameters=[
            PROJECT_PARAM,
            OpenApiParameter(
                "state",
                str,
                enum=QueueItem.State.values,
                description="open (default), held (the sample is flagged: nobody is given "
                "it until its flags are resolved) or done.",
            ),
            OpenApiParameter("strategy", str, description="Only items surfaced by this strategy."),
        ],
    ),
    partial_update=extend_schema(
        summary="Reprioritise an open (or held) queue item",
        parameters=[PROJECT_PARAM, ID_PARAM],
        request=QueueItemUpdateSerializer,
        responses={200: QueueItemSerializer},
    ),
)
class QueueViewSet(
    ProjectScopedMixin,
    mixins.ListModelMixin,
    viewsets.GenericViewSet,
):
    """The project's work queue. Anyone in the project reads it; data scientists
    and owners reprioritise; annotators take the next sample and submit labels
    (or both at once: submit-next)."""

    queryset = QueueItem.objects.none()
    serializer_class = QueueItemSerializer
    pagination_class = QueueCursorPagination

    @classmethod
    def as_view(cls, actions=None, **initkwargs):
        """next, submit and submit-next answer plain token requests without DRF's
        request/response machinery (see ``_without_drf``); everything else,
        and every error, goes through the DRF actions below, which the
        OpenAPI schema describes."""
        view = super().as_view(actions, **initkwargs)
        fast = _WITHOUT_DRF.get((actions or {}).get("post"))
        # Only while the DRF view adds nothing the fast path would skip.
        plain_drf = not cls.throttle_classes and list(cls.permission_classes) == [IsAuthenticated]
        return _without_drf(view, fast) if fast and plain_drf else view

    def get_authenticators(self):
        authenticators = super().get_authenticators()
        if getattr(self, "swagger_fake_view", False):
            return authenticators  # the schema documents DRF's token scheme: the same one
        return [
            QuickTokenAuthentication() if type(a) is TokenAuthentication else a
            for a in authenticators
        ]

    lookup_value_regex = r"\d+"
    filter_backends = []

    def get_project_queryset(self, project):
        state = self.request.query_params.get("state", QueueItem.State.OPEN)
        if state not in QueueItem.State.values:
            raise ValidationError(
                {"state": f"Unknown state '{state}': use {' or '.join(QueueItem.State.values)}."}
            )
        items = QueueItem.objects.filter(project=project, state=state).select_related("sample")
        if strategy := self.request.query_params.get("strategy"):
            items = items.filter(strategy=strategy)
        return items

    def partial_update(self, request, *args, **kwargs):
        project = self.get_project(Capability.QUEUE)
        item = get_object_or_404(
            QueueItem.objects.select_related("sample"), project=project, pk=kwargs["pk"]
        )
        serializer = QueueItemUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        if item.state not in QueueItem.QUEUED:
            raise ValidationError(
                {
                    "priority": f"Queue item {item.pk} is done; only open or held items can be "
                    "reprioritised."
                }
            )
        item = queue_item_update(item=item, by=request.user, **serializer.validated_data)
        return Response(QueueItemSerializer(item).data)

    @extend_schema(
        summary="Take the next sample to label",
        description="Hands you the highest-priority sample you have not answered, reserved "
        "for you until `expires_at`. Asking again returns the same sample until you submit. "
        "204 when nothing is left for you.",
        parameters=[PROJECT_PARAM],
        request=NextRequestSerializer,
        responses={
            200: NextSerializer,
            204: OpenApiResponse(description="Nothing left in the queue for you."),
        },
    )
    @action(detail=False, methods=["post"], url_path="next")
    def next(self, request, *args, **kwargs):
        project = self.get_project(Capability.LABEL)
        exclude = _plain_exclude(request.data)
        if exclude is None:
            exclude = _validated(NextRequestSerializer, request.data).get("exclude", [])
        lease = queue_next(project=project, user=request.user, exclude_item_ids=exclude)
        if lease is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(_NEXT_OUT.to_representation(lease))

    @extend_schema(
        summary="Submit a label (or a skip)",
        description="Appends an annotation; a changed label is a new row. A label whose "
        "lease has expired still counts.",
        parameters=[PROJECT_PARAM],
        request=SubmitSerializer,
        responses={201: AnnotationSerializer},
    )
    @action(detail=False, methods=["post"], url_path="submit")
    def submit(self, request, *args, **kwargs):
        project = self.get_project(Capability.LABEL)
        data = _plain_submit(request.data) or _validated(SubmitSerializer, request.data)
        with _refusal_as_validation_error():
            annotation, _ = _submit(request.user, project, data)
        return Response(_ANNOTATION_OUT.to_representation(annotation), status=201)

    @extend_schema(
        summary="Submit a label (or a skip) and take the next sample",
        description="submit, then next, in one request and one transaction: the annotation "
        "is appended exactly as submit appends it, and the next sample handed out exactly as "
        "next hands it out (the same lease, overlap and `exclude` rules). `next` is null when "
        "nothing is left for you. A refused submission writes nothing and hands out nothing.",
        parameters=[PROJECT_PARAM],
        request=SubmitNextSerializer,
        responses={201: SubmitNextResultSerializer},
    )
    @action(detail=False, methods=["post"], url_path="submit-next")
    def submit_next(self, request, *args, **kwargs):
        project = self.get_project(Capability.LABEL)
        data = _plain_submit_next(request.data) or _validated(SubmitNextSerializer, request.data)
        with _refusal_as_validation_error():
            annotation, lease = _submit(request.user, project, data, then_next=True)
        return Response(_submit_next_out(annotation, lease), status=201)


# The hot path ("next" + "submit", once per label) answers with these shared
# instances: a DRF serializer builds its fields on first use, and a
# ModelSerializer's field building costs more than the rest of the request.
# ``to_representation`` keeps no state, so one instance serves every thread,
# and the JSON is exactly what ``NextSerializer(lease).data`` gives.
_NEXT_OUT = NextSerializer()
_ANNOTATION_OUT = AnnotationSerializer()


def _without_drf(view, fast):
    """``view`` (a DRF action) preceded by ``fast(request, project)``, which
    answers the hot path's plain requests or returns None to hand over.

    Plain means what annotators' scripts send: POST, a JSON body that is
    plainly valid, ``Authorization: Token ...``, no session cookie (DRF
    tries session authentication first, and enforces CSRF there), a valid
    token of an active user who may label in the project. Anything else -
    and any refusal, including a label the service rejects - is answered by
    the DRF action, so errors, their format and their status codes stay
    DRF's. A fast answer is the bytes DRF renders for the same data (tests
    compare both paths); skipping DRF saves ~0.3 ms a request, a tenth of a
    label round trip.
    """

    @functools.wraps(view)  # keeps .cls/.actions/.initkwargs for the router and schema
    def wrapped(request, *args, **kwargs):
        admitted = _plain_token_request(request, kwargs.get("project_pk"))
        if admitted is not None:
            response = fast(request, *admitted)
            if response is not None:
                return response
        return view(request, *args, **kwargs)

    return wrapped


def _plain_token_request(request, project_pk):
    """(user, project, body) when a request is plain (see ``_without_drf``), else None."""
    if request.method != "POST" or request.content_type != "application/json":
        return None
    if settings.SESSION_COOKIE_NAME in request.COOKIES:
        return None
    header = get_authorization_header(request).split()
    if len(header) != 2 or header[0].lower() != b"token":
        return None
    try:
        body = json.loads(request.body) if request.body else {}
        project_pk = int(project_pk)
        user, _ = token_user(header[1].decode(), project_pk)
        project = get_project_for_user(user, project_pk, capability=Capability.LABEL)
    except (ValueError, TypeError, UnicodeError, exceptions.AuthenticationFailed):
        return None
    except (Http404, PermissionDenied):
        return None
    request.user = user
    return user, project, body


def _drf_json(data, status_code=200):
    response = HttpResponse(_RENDERER.render(data), status=status_code)
    response["Content-Type"] = "application/json"
    # What DRF adds to these actions' answers.
    response["Vary"] = "Accept"
    response["Allow"] = "POST, OPTIONS"
    return response


def _next_without_drf(request, user, project, body):
    exclude = _plain_exclude(body)
    if exclude is None:
        return None
    lease = queue_next(project=project, user=user, exclude_item_ids=exclude)
    if lease is None:
        response = _drf_json(None, status.HTTP_204_NO_CONTENT)
        del response["Content-Type"]
        return response
    return _drf_json(_NEXT_OUT.to_representation(lease))


def _submit_without_drf(request, user, project, body):
    data = _plain_submit(body)
    if data is None:
        return None
    try:
        annotation, _ = _submit(user, project, data)
    except AnnotationError:
        return None  # nothing was written; the DRF action answers with the error
    return _drf_json(_ANNOTATION_OUT.to_representation(annotation), status.HTTP_201_CREATED)


def _validated(serializer_class, data):
    """The serializer's validated data; its errors answer the request (400)."""
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


@contextlib.contextmanager
def _refusal_as_validation_error():
    """A label the service refuses answers as a DRF validation error on its field."""
    try:
        yield
    except AnnotationError as exc:
        raise refusal(exc) from exc


def _submit(user, project, data, *, then_next=False):
    """(annotation, lease) for a validated body: ``annotation_submit`` (lease
    None) or, with ``then_next``, ``annotation_submit_and_next``."""
    fields = {
        "project": project,
        "user": user,
        "sample": data["sample"],
        "label": data.get("label"),
        "skip": data["skip"],
        "seconds": data.get("seconds"),
    }
    if then_next:
        annotation, lease = annotation_submit_and_next(
            **fields, exclude_item_ids=data.get("exclude", ())
        )
    else:
        annotation, lease = annotation_submit(**fields), None
    annotation.annotator = user
    return annotation, lease


def _submit_next_out(annotation, lease):
    """What ``SubmitNextResultSerializer`` gives for the pair (see _NEXT_OUT)."""
    return {
        "annotation": _ANNOTATION_OUT.to_representation(annotation),
        "next": None if lease is None else _NEXT_OUT.to_representation(lease),
    }


def _submit_next_without_drf(request, user, project, body):
    data = _plain_submit_next(body)
    if data is None:
        return None
    try:
        annotation, lease = _submit(user, project, data, then_next=True)
    except AnnotationError:
        return None  # nothing was written; the DRF action answers with the error
    return _drf_json(_submit_next_out(annotation, lease), status.HTTP_201_CREATED)


_WITHOUT_DRF = {
    "next": _next_without_drf,
    "submit": _submit_without_drf,
    "submit_next": _submit_next_without_drf,
}
_RENDERER = JSONRenderer()


def _plain_exclude(data):
    """``exclude`` from a body that is plainly valid (what clients send), else
    None: then the serializer decides, with its error messages."""
    if not data:
        return []
    if type(data) is not dict or data.keys() - {"exclude"}:
        return None
    exclude = data["exclude"]
    plain = type(exclude) is list and len(exclude) <= 10
    if plain and all(type(pk) is int and pk >= 1 for pk in exclude):
        return exclude
    return None


def _plain_submit_next(data):
    """SubmitNextSerializer's validated data for a plainly valid body, else None."""
    if type(data) is not dict or "exclude" not in data:
        return _plain_submit(data)
    exclude = _plain_exclude({"exclude": data["exclude"]})
    out = _plain_submit({key: value for key, value in data.items() if key != "exclude"})
    if exclude is None or out is None:
        return None
    out["exclude"] = exclude
    return out


def _plain_submit(data):
    """SubmitSerializer's validated data for a plainly valid body, else None
    (the serializer then validates, with its error messages)."""
    if type(data) is not dict or data.keys() - {"sample", "label", "skip", "seconds"}:
        return None
    sample, label = data.get("sample"), data.get("label")
    skip, seconds = data.get("skip", False), data.get("seconds")
    if type(sample) is not int or type(skip) is not bool:
        return None
    if type(label) is int:
        label = str(label)
    elif label is not None and not (
        type(label) is str and 0 < len(label) <= 100 and label == label.strip()
    ):
        return None
    if seconds is not None:
        if type(seconds) not in (int, float) or not 0 <= seconds < math.inf:
            return None
        seconds = float(seconds)
    out = {"sample": sample, "skip": skip}
    if "label" in data:
        out["label"] = label
    if "seconds" in data:
        out["seconds"] = seconds
    return out


@extend_schema_view(
    list=extend_schema(
        summary="Labels (annotations), oldest first",
        description="Every row ever recorded: a changed label is a new row, and an "
        "annotator's current answer is their latest row for the sample.",
        parameters=[
            PROJECT_PARAM,
            OpenApiParameter("annotator", str, description="User id or username."),
            OpenApiParameter("sample", int, description="Sample id."),
            OpenApiParameter("label", str, description="Label class id or name."),
            OpenApiParameter("kind", str, enum=Annotation.Kind.values),
        ],
    )
)
class LabelViewSet(ProjectScopedMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    queryset = Annotation.objects.none()
    serializer_class = AnnotationSerializer
    filter_backends = []

    def get_project_queryset(self, project):
        rows = Annotation.objects.filter(project=project).select_related(
            "annotator", "label", "sample"
        )
        params = self.request.query_params
        if annotator := params.get("annotator", "").strip():
            match = Q(annotator__username=annotator)
            if annotator.isdigit():
                match |= Q(annotator_id=int(annotator))
            rows = rows.filter(match)
        if sample := params.get("sample", "").strip():
            if not sample.isdigit():
                raise ValidationError({"sample": f"Give a sample id (a number), not '{sample}'."})
            rows = rows.filter(sample_id=int(sample))
        if label := params.get("label", "").strip():
            try:
                rows = rows.filter(label=label_class_resolve(project=project, value=label))
            except AnnotationError as exc:
                raise ValidationError({"label": [str(exc)]}) from exc
        if kind := params.get("kind", "").strip():
            if kind not in Annotation.Kind.values:
                raise ValidationError(
                    {"kind": f"Unknown kind '{kind}': use {' or '.join(Annotation.Kind.values)}."}
                )
            rows = rows.filter(kind=kind)
        return rows
