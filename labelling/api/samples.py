"""Samples (browse with filters), their revisions and flags."""

import django_filters
from django import forms
from django.core.validators import RegexValidator
from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_field,
    extend_schema_view,
)
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from leanml_site.api import PROJECT_PARAM, refusal
from leanml_site.roles import Capability

from ..limits import MAX_NOTE_CHARS
from ..models import Flag, Sample, SampleRevision
from ..permissions import get_sample_for_user
from ..selectors import FLAG_ANY, FLAG_NONE, LABEL_NONE, sample_filter
from ..services.cleaning import CleaningError, flag_resolve, sample_flag, sample_revise
from .base import ProjectScopedMixin

SAMPLE_PARAM = OpenApiParameter("sample_pk", int, OpenApiParameter.PATH, description="Sample id")
ID_PARAM = OpenApiParameter("id", int, OpenApiParameter.PATH)


def _cleaning_error(exc: CleaningError, *, prefix=None):
    """A service refusal as a 400 naming the input (``changes.<field>`` for revisions)."""
    if prefix and exc.field and exc.field not in (prefix, "note"):
        return ValidationError({prefix: {exc.field: [str(exc)]}})
    return refusal(exc)


# --- samples ------------------------------------------------------------------------


@extend_schema_field(OpenApiTypes.INT)
class IntegerFilter(django_filters.NumberFilter):
    field_class = forms.IntegerField


class SampleFilter(django_filters.FilterSet):
    """The browser's filters; ``sample_filter`` applies them, so both agree."""

    label = django_filters.CharFilter(
        method="_validated_only",
        validators=[
            RegexValidator(rf"^(\d+|{LABEL_NONE})$", f"Give a label class id or '{LABEL_NONE}'.")
        ],
        help_text="Consensus label class id, or 'none' for samples without one.",
    )
    consensus_state = django_filters.ChoiceFilter(
        choices=Sample.Consensus.choices, method="_validated_only"
    )
    split = django_filters.ChoiceFilter(choices=Sample.Split.choices, method="_validated_only")
    source = django_filters.ChoiceFilter(choices=Sample.Source.choices, method="_validated_only")
    status = django_filters.ChoiceFilter(choices=Sample.Status.choices, method="_validated_only")
    flagged = django_filters.ChoiceFilter(
        choices=[(FLAG_ANY, "Has an open flag"), (FLAG_NONE, "No open flag")] + Flag.Kind.choices,
        method="_validated_only",
        help_text="'any', 'none' or a flag kind (open flags only).",
    )
    annotator = IntegerFilter(
        method="_validated_only", help_text="User id: samples this user has labelled or skipped."
    )
    q = django_filters.CharFilter(
        method="_validated_only",
        max_length=200,
        help_text="Text in the project's text/category fields, or an exact external id.",
    )

    class Meta:
        model = Sample
        fields = []

    def _validated_only(self, queryset, name, value):
        return queryset  # applied together in filter_queryset

    def filter_queryset(self, queryset):
        data = dict(self.form.cleaned_data)
        data["flag"] = data.pop("flagged", None)
        view = self.request.parser_context["view"]
        return sample_filter(queryset, project=view.get_project(), filters=data)


class SampleSerializer(serializers.ModelSerializer):
    class Meta:
        model = Sample
        fields = [
            "id",
            "external_id",
            "source",
            "split",
            "status",
            "revision",
            "content_hash",
            "consensus_state",
            "consensus_label",
            "created_at",
        ]


class OpenFlagSerializer(serializers.ModelSerializer):
    class Meta:
        model = Flag
        fields = ["id", "kind", "created_at"]


class SampleDetailSerializer(SampleSerializer):
    open_flags = OpenFlagSerializer(many=True, read_only=True, source="current_open_flags")

    class Meta(SampleSerializer.Meta):
        fields = [*SampleSerializer.Meta.fields, "data", "open_flags"]


@extend_schema_view(
    list=extend_schema(
        summary="Browse a project's samples",
        description="Cursor-paginated by id; the filters match the samples browser.",
        parameters=[PROJECT_PARAM],
    ),
    retrieve=extend_schema(
        summary="One sample with its current data",
        parameters=[PROJECT_PARAM, ID_PARAM],
    ),
)
class SampleViewSet(
    ProjectScopedMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """A project's samples. Every member may read them."""

    queryset = Sample.objects.none()
    serializer_class = SampleSerializer
    filterset_class = SampleFilter

    def get_serializer_class(self):
        return SampleDetailSerializer if self.action == "retrieve" else SampleSerializer

    def get_project_queryset(self, project):
        return Sample.objects.filter(project=project).only(
            *SampleSerializer.Meta.fields, "project_id"
        )

    def get_object(self):
        sample = get_sample_for_user(
            self.request.user, self.kwargs["project_pk"], self.kwargs["pk"]
        )
        sample.current_open_flags = list(
            sample.flags.filter(resolved_at__isnull=True).order_by("id")
        )
        return sample


class SampleScopedMixin(ProjectScopedMixin):
    """For views under ``samples/<sample_pk>/``."""

    def get_sample(self, capability=Capability.VIEW):
        return get_sample_for_user(
            self.request.user,
            self.kwargs["project_pk"],
            self.kwargs["sample_pk"],
            capability=capability,
        )


# --- revisions ----------------------------------------------------------------------


class RevisionSerializer(serializers.ModelSerializer):
    author = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = SampleRevision
        fields = ["id", "number", "data", "content_hash", "author", "note", "created_at"]


class RevisionCreateSerializer(serializers.Serializer):
    changes = serializers.DictField(
        help_text='The corrected fields and their new values, e.g. {"review": "Fixed text"}.'
    )
    note = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=MAX_NOTE_CHARS
    )


@extend_schema_view(
    list=extend_schema(
        summary="A sample's revisions (revision 1 is the data as imported)",
        parameters=[PROJECT_PARAM, SAMPLE_PARAM],
    ),
    create=extend_schema(
        summary="Correct fields of a sample as a new revision",
        parameters=[PROJECT_PARAM, SAMPLE_PARAM],
        request=RevisionCreateSerializer,
        responses={201: RevisionSerializer},
    ),
)
class RevisionViewSet(
    SampleScopedMixin, mixins.ListModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet
):
    """Corrections of a sample's data. Nothing is overwritten: the first
    correction stores the imported original as revision 1. Experts, data
    scientists and owners may correct; every member may read."""

    queryset = SampleRevision.objects.none()
    serializer_class = RevisionSerializer

    def get_project_queryset(self, project):
        return SampleRevision.objects.filter(sample=self.get_sample()).select_related("author")

    def create(self, request, *args, **kwargs):
        sample = self.get_sample(Capability.CLEAN)
        payload = RevisionCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        try:
            revision = sample_revise(
                sample=sample,
                by=request.user,
                changes=payload.validated_data["changes"],
                note=payload.validated_data["note"],
            )
        except CleaningError as exc:
            raise _cleaning_error(exc, prefix="changes") from exc
        return Response(RevisionSerializer(revision).data, status=status.HTTP_201_CREATED)


# --- flags --------------------------------------------------------------------------


class FlagSerializer(serializers.ModelSerializer):
    sample = serializers.PrimaryKeyRelatedField(read_only=True)
    duplicate_of = serializers.SlugRelatedField(slug_field="external_id", read_only=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    resolved_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Flag
        fields = [
            "id",
            "sample",
            "kind",
            "duplicate_of",
            "note",
            "created_by",
            "created_at",
            "resolved_at",
            "resolved_by",
            "resolution",
        ]


class FlagCreateSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=Flag.Kind.choices)
    note = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=MAX_NOTE_CHARS
    )
    duplicate_of = serializers.CharField(
        required=False,
        allow_blank=True,
        allow_null=True,
        default=None,
        help_text="External id of the sample this one duplicates (duplicate flags only).",
    )


class FlagResolveSerializer(serializers.Serializer):
    resolution = serializers.CharField(
        help_text="How the problem was resolved.", max_length=MAX_NOTE_CHARS
    )


@extend_schema_view(
    list=extend_schema(
        summary="A sample's flags, open and resolved", parameters=[PROJECT_PARAM, SAMPLE_PARAM]
    ),
    retrieve=extend_schema(summary="One flag", parameters=[PROJECT_PARAM, SAMPLE_PARAM, ID_PARAM]),
    create=extend_schema(
        summary="Flag a sample (excludes it from training until resolved)",
        parameters=[PROJECT_PARAM, SAMPLE_PARAM],
        request=FlagCreateSerializer,
        responses={201: FlagSerializer},
    ),
    resolve=extend_schema(
        summary="Resolve a flag (the sample returns to training when no flag is open)",
        parameters=[PROJECT_PARAM, SAMPLE_PARAM, ID_PARAM],
        request=FlagResolveSerializer,
        responses={200: FlagSerializer},
    ),
)
class FlagViewSet(
    SampleScopedMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    viewsets.GenericViewSet,
):
    """Problems with a sample (duplicate, corrupt, ambiguous, out of scope). An
    open flag excludes the sample from training. Experts, data scientists and
    owners may flag and resolve; every member may read."""

    queryset = Flag.objects.none()
    serializer_class = FlagSerializer

    def get_project_queryset(self, project):
        return Flag.objects.filter(sample=self.get_sample()).select_related(
            "created_by", "resolved_by", "duplicate_of"
        )

    def create(self, request, *args, **kwargs):
        sample = self.get_sample(Capability.CLEAN)
        payload = FlagCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        duplicate_of = None
        if data["duplicate_of"]:
            duplicate_of = Sample.objects.filter(
                project_id=sample.project_id, external_id=data["duplicate_of"]
            ).first()
            if duplicate_of is None:
                raise ValidationError(
                    {
                        "duplicate_of": [
                            f"No sample with id '{data['duplicate_of']}' in this project."
                        ]
                    }
                )
        try:
            flag = sample_flag(
                sample=sample,
                by=request.user,
                kind=data["kind"],
                note=data["note"],
                duplicate_of=duplicate_of,
            )
        except CleaningError as exc:
            raise _cleaning_error(exc) from exc
        return Response(FlagSerializer(flag).data, status=status.HTTP_201_CREATED)

    @action(detail=True, methods=["post"])
    def resolve(self, request, *args, **kwargs):
        sample = self.get_sample(Capability.CLEAN)
        flag = Flag.objects.filter(sample=sample, pk=kwargs["pk"]).first()
        if flag is None:
            raise Http404("No such flag.")
        payload = FlagResolveSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        try:
            flag = flag_resolve(
                flag=flag, by=request.user, resolution=payload.validated_data["resolution"]
            )
        except CleaningError as exc:
            raise _cleaning_error(exc) from exc
        return Response(FlagSerializer(flag).data)
