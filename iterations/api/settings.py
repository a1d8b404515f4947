"""Model settings (value metric, slices, gates, rhythm), keyword rule sets and
ensemble configurations."""

import dataclasses

from drf_spectacular.utils import (
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_view,
)
from rest_framework import generics, mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response

from labelling.api.base import ProjectScopedMixin
from labelling.permissions import get_project_for_user
from leanml_site.api import PROJECT_PARAM, ErrorSerializer, refusal
from leanml_site.roles import Capability
from ml.submodels import available, get

from ..models import EnsembleConfig, KeywordRuleSet, ModelSettings
from ..services.settings import (
    ALL_FIELDS,
    PREVIEW_LIMIT,
    SettingsError,
    class_names,
    ensemble_config_create,
    model_settings_get,
    model_settings_update,
    rule_preview,
    rule_set_create,
    settings_editable,
)
from .common import NewestFirstPagination

REFUSED = OpenApiResponse(
    ErrorSerializer, description="Refused: `message` says why, `field` where."
)


# --- model settings -----------------------------------------------------------------------


@extend_schema_field(
    {
        "type": "object",
        "additionalProperties": {"type": "object", "additionalProperties": {"type": "number"}},
        "description": "{true class: {predicted class: gain per prediction}}; negative = cost; "
        "cells left out are 0; {} = no value metric.",
        "example": {"great": {"great": 1.0, "other": -2.0}, "other": {"great": -5.0}},
    }
)
class GainMatrixField(serializers.JSONField):
    pass


@extend_schema_field(
    {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {"gate": {"type": "string"}},
            "required": ["gate"],
            "additionalProperties": True,
        },
        "description": "The release gates, each {gate: name, <key>: number}: value_not_worse "
        "(margin), max_recall_drop (points), max_latency_ms_per_1000 (ms), accuracy_not_worse "
        "and macro_f1_not_worse (tolerance, a fraction: 0.01 = one point). [] = the default "
        "gates.",
        "example": [{"gate": "value_not_worse", "margin": 0}],
    }
)
class GatesField(serializers.JSONField):
    pass


class ModelSettingsSerializer(serializers.ModelSerializer):
    """Reading and writing share one shape; which fields a PATCH may carry
    depends on the caller's role (``editable``)."""

    value_unit = serializers.JSONField(help_text="Unit of value, e.g. EUR.", required=False)
    gain_matrix = GainMatrixField(required=False)
    useful_baseline = serializers.JSONField(
        required=False,
        help_text="Value per 1,000 predictions the model must beat to be worth running; null: "
        "none.",
    )
    slice_fields = serializers.JSONField(
        required=False, help_text="Sample fields the report slices metrics by."
    )
    gates = GatesField(required=False)
    compare_last = serializers.JSONField(
        required=False, help_text="Earlier versions re-scored beside candidate and production."
    )
    retrain_every = serializers.JSONField(
        required=False,
        help_text="Retrain automatically after this many new consensus labels; null: never.",
    )
    editable = serializers.SerializerMethodField(
        help_text="The fields your role may change: value metric (product managers, owners); "
        "slices, gates, compare_last, retrain_every (data scientists, product managers, owners)."
    )
    classes = serializers.SerializerMethodField(help_text="The project's class names.")
    sample_fields = serializers.SerializerMethodField(help_text="The project's sample field names.")

    class Meta:
        model = ModelSettings
        fields = [*ALL_FIELDS, "editable", "classes", "sample_fields"]

    def get_editable(self, settings) -> list[str]:
        editable = settings_editable(self.context["project"].role)
        return [name for name in ALL_FIELDS if name in editable]

    def get_classes(self, settings) -> list[str]:
        return class_names(self.context["project"])

    def get_sample_fields(self, settings) -> list[str]:
        return [f["name"] for f in self.context["project"].fields or []]


class ModelSettingsView(generics.GenericAPIView):
    """The project's model settings: one resource per project.

    Permission split (the choice this API makes): the value metric — unit,
    gain matrix, useful baseline — is the product manager's (DECIDE); slice
    fields, gates, compare_last and retrain_every may be set by data
    scientists (TRAIN) or product managers (DECIDE); owners may set all.
    Experts read them. A PATCH naming a field the caller's role may not
    change is refused with 403 as a whole.
    """

    serializer_class = ModelSettingsSerializer
    queryset = ModelSettings.objects.none()
    pagination_class = None
    filter_backends = []

    def _project(self):
        return get_project_for_user(
            self.request.user, self.kwargs["project_pk"], capability=Capability.VIEW
        )

    def _body(self, project):
        settings = model_settings_get(project)
        return ModelSettingsSerializer(settings, context={"project": project}).data

    @extend_schema(summary="Read the model settings", parameters=[PROJECT_PARAM])
    def get(self, request, *args, **kwargs):
        return Response(self._body(self._project()))

    @extend_schema(
        summary="Change model settings",
        description="Send only the fields to change; all are validated before any is saved "
        "(400 names the field). See the view's description for who may change what.",
        parameters=[PROJECT_PARAM],
        request=ModelSettingsSerializer,
        responses={
            200: ModelSettingsSerializer,
            400: REFUSED,
            403: OpenApiResponse(ErrorSerializer, description="Your role may not change a field."),
        },
    )
    def patch(self, request, *args, **kwargs):
        project = self._project()
        editable = settings_editable(project.role)
        if not isinstance(request.data, dict):
            raise refusal(SettingsError("Send an object of settings to change."))
        changes = {k: v for k, v in request.data.items() if k in ALL_FIELDS}
        unknown = sorted(set(request.data) - set(ALL_FIELDS))
        if unknown:
            raise refusal(
                SettingsError(
                    f"{unknown[0]!r} is not a setting you can change; settings: "
                    f"{', '.join(ALL_FIELDS)}.",
                    unknown[0],
                )
            )
        if not editable:
            raise PermissionDenied(
                f"Your role ({project.role_label}) may read the model settings, not change them."
            )
        refused = [name for name in changes if name not in editable]
        if refused:
            raise PermissionDenied(
                f"Your role ({project.role_label}) may not change {refused[0]}; "
                f"you may change: {', '.join(n for n in ALL_FIELDS if n in editable)}."
            )
        try:
            model_settings_update(project=project, by=request.user, changes=changes)
        except SettingsError as error:
            raise refusal(error) from None
        return Response(self._body(project))


# --- keyword rule sets --------------------------------------------------------------------


class RuleSerializer(serializers.Serializer):
    pattern = serializers.CharField(
        help_text="Words matched as whole words in this order, any case; a regular expression "
        "when `regex` is true."
    )
    label = serializers.CharField(help_text="The class the rule votes for.")
    weight = serializers.FloatField(required=False, default=1.0, help_text="Positive.")
    regex = serializers.BooleanField(required=False, default=False)


class RuleSetSerializer(serializers.ModelSerializer):
    rules = RuleSerializer(many=True, read_only=True)
    created_by = serializers.CharField(
        source="created_by.username", read_only=True, allow_null=True
    )

    class Meta:
        model = KeywordRuleSet
        fields = ["id", "number", "rules", "note", "created_by", "created_at"]
        read_only_fields = fields


@extend_schema_field(RuleSerializer(many=True))
class RulesInputField(serializers.JSONField):
    """Validated by the rules service, so errors name the rule by number."""


class RuleSetCreateSerializer(serializers.Serializer):
    rules = RulesInputField(help_text="The full rule list of the new version.")
    note = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)


class RulePreviewSerializer(serializers.Serializer):
    pattern = serializers.CharField(max_length=500)
    regex = serializers.BooleanField(required=False, default=False)


class ClassCountSerializer(serializers.Serializer):
    label = serializers.CharField()
    count = serializers.IntegerField()
    share = serializers.FloatField(allow_null=True)


class PreviewExampleSerializer(serializers.Serializer):
    external_id = serializers.CharField()
    label = serializers.CharField()
    text = serializers.CharField(help_text="The first 200 characters.")


class RulePreviewResultSerializer(serializers.Serializer):
    pattern = serializers.CharField()
    regex = serializers.BooleanField()
    scanned = serializers.IntegerField(help_text="Labelled samples read (newest first).")
    limit = serializers.IntegerField()
    matched = serializers.IntegerField()
    by_class = ClassCountSerializer(many=True)
    examples = PreviewExampleSerializer(many=True)


@extend_schema(parameters=[PROJECT_PARAM])
@extend_schema_view(
    list=extend_schema(summary="Keyword rule set versions, newest first"),
    retrieve=extend_schema(summary="One rule set version"),
)
class RuleSetViewSet(
    ProjectScopedMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Keyword rules written by domain experts, versioned like code: each save
    is a new version with the full rule list; the next retrain uses the newest."""

    serializer_class = RuleSetSerializer
    queryset = KeywordRuleSet.objects.none()
    pagination_class = NewestFirstPagination

    def get_project_queryset(self, project):
        return KeywordRuleSet.objects.filter(project=project).select_related("created_by")

    @extend_schema(
        summary="Save a new rule set version",
        description="Experts, data scientists and owners (those who label). Each rule's "
        "pattern is checked as the keyword rules sub-model reads it, and its class must be "
        "one of the project's; a 400 names the rule (`field`: `rules.<number>`, 1-based). "
        "Saving the same rules as the current version is refused.",
        request=RuleSetCreateSerializer,
        responses={201: RuleSetSerializer, 400: REFUSED},
    )
    def create(self, request, *args, **kwargs):
        project = self.get_project(Capability.LABEL)
        form = RuleSetCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        try:
            rule_set = rule_set_create(project=project, by=request.user, **form.validated_data)
        except SettingsError as error:
            raise refusal(error) from None
        return Response(RuleSetSerializer(rule_set).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="Try a pattern on the labelled samples",
        description=f"How many of the newest {PREVIEW_LIMIT:,} usable labelled samples the "
        "pattern matches, their class mix and a few examples. Writes nothing.",
        request=RulePreviewSerializer,
        responses={200: RulePreviewResultSerializer, 400: REFUSED},
    )
    @action(detail=False, methods=["post"])
    def preview(self, request, *args, **kwargs):
        project = self.get_project(Capability.VIEW)
        form = RulePreviewSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        try:
            result = rule_preview(project=project, **form.validated_data)
        except SettingsError as error:
            raise refusal(error) from None
        return Response(RulePreviewResultSerializer(result).data)


# --- ensemble configurations --------------------------------------------------------------


class SubModelEntrySerializer(serializers.Serializer):
    key = serializers.CharField(
        required=False, help_text="Names the sub-model in the ensemble (default: its name)."
    )
    name = serializers.CharField(help_text="A registered sub-model (see `available`).")
    fields = serializers.ListField(child=serializers.CharField(), help_text="Sample fields read.")
    params = serializers.DictField(required=False, help_text="Hyper-parameters.")


@extend_schema_field(SubModelEntrySerializer(many=True))
class SubModelsField(serializers.JSONField):
    """Validated by the settings service against the registry and the project's fields."""


class EnsembleConfigSerializer(serializers.ModelSerializer):
    submodels = SubModelsField()
    weights = serializers.DictField(
        child=serializers.FloatField(),
        required=False,
        help_text="Soft-voting weight per sub-model key (default 1).",
    )
    created_by = serializers.CharField(
        source="created_by.username", read_only=True, allow_null=True
    )

    class Meta:
        model = EnsembleConfig
        fields = [
            "id",
            "number",
            "submodels",
            "combiner",
            "weights",
            "note",
            "created_by",
            "created_at",
        ]
        read_only_fields = ["id", "number", "created_by", "created_at"]


class AvailableSubModelSerializer(serializers.Serializer):
    name = serializers.CharField()
    version = serializers.CharField()
    description = serializers.CharField()
    n_fields = serializers.IntegerField(
        allow_null=True, help_text="Fields it reads; null: one or more."
    )
    params = serializers.DictField(help_text="Hyper-parameters with their defaults.")


@extend_schema(parameters=[PROJECT_PARAM])
@extend_schema_view(
    list=extend_schema(summary="Ensemble configurations, newest first"),
    retrieve=extend_schema(summary="One ensemble configuration"),
    create=extend_schema(
        summary="Save a new ensemble configuration",
        description="Data scientists and owners. Each sub-model must be registered and read "
        "fields the project has; keys are unique; the next retrain uses the newest "
        "configuration. A 400 names the entry (`submodels.<index>.<part>`, 0-based).",
        responses={201: EnsembleConfigSerializer, 400: REFUSED},
    ),
)
class EnsembleConfigViewSet(
    ProjectScopedMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = EnsembleConfigSerializer
    queryset = EnsembleConfig.objects.none()
    pagination_class = NewestFirstPagination

    def get_project_queryset(self, project):
        return EnsembleConfig.objects.filter(project=project).select_related("created_by")

    def perform_create(self, serializer):
        project = self.get_project(Capability.TRAIN)
        try:
            serializer.instance = ensemble_config_create(
                project=project, by=self.request.user, **serializer.validated_data
            )
        except SettingsError as error:
            raise refusal(error) from None

    @extend_schema(
        summary="Sub-models the server can train",
        description="The registry: each name with its hyper-parameters and their defaults.",
        responses={200: AvailableSubModelSerializer(many=True)},
    )
    @action(detail=False, methods=["get"], pagination_class=None, filter_backends=[])
    def available(self, request, *args, **kwargs):
        self.get_project(Capability.VIEW)
        entries = []
        for name in available():
            cls = get(name)
            defaults = {}
            for field in dataclasses.fields(cls.Params):
                if field.default is not dataclasses.MISSING:
                    defaults[field.name] = field.default
                elif field.default_factory is not dataclasses.MISSING:
                    defaults[field.name] = field.default_factory()
            entries.append(
                {
                    "name": name,
                    "version": cls.version,
                    "description": (cls.__doc__ or "").strip().split("\n\n")[0],
                    "n_fields": cls.n_fields,
                    "params": defaults,
                }
            )
        return Response(AvailableSubModelSerializer(entries, many=True).data)
