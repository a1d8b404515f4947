"""Consensus per sample, adjudication and the project's agreement report."""

from dataclasses import asdict

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_field,
    extend_schema_serializer,
)
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.response import Response

from leanml_site.roles import Capability, role_can

from ..limits import MAX_NOTE_CHARS
from ..models import Adjudication, LabelClass, Sample
from ..permissions import get_sample_for_user
from ..selectors_agreement import project_agreement
from ..services.review import REVIEWS, sample_adjudicate
from .base import ProjectScopedMixin

STATES = [value for value, _ in Sample.Consensus.choices]


def resolve_label(project, value, *, field="label") -> LabelClass:
    """A class of ``project`` named by id (a JSON number or digits) or by name."""
    classes = list(project.label_classes.all())
    if not isinstance(value, bool) and isinstance(value, int):
        found = next((c for c in classes if c.pk == value), None)
    else:
        text = str(value).strip()
        found = next((c for c in classes if c.name == text), None)
        if found is None and text.isdigit():
            found = next((c for c in classes if c.pk == int(text)), None)
    if found is None:
        names = ", ".join(c.name for c in classes)
        raise ValidationError(
            {
                field: f"No label class {str(value)[:60]!r} in this project; use one of: {names} "
                "(or their ids)."
            }
        )
    return found


# --- consensus list -----------------------------------------------------------------------


class ConsensusSerializer(serializers.ModelSerializer):
    consensus_label_name = serializers.SerializerMethodField()

    class Meta:
        model = Sample
        fields = [
            "id",
            "external_id",
            "consensus_state",
            "consensus_label",
            "consensus_label_name",
            "status",
            "split",
        ]

    def get_consensus_label_name(self, sample) -> str | None:
        return sample.consensus_label.name if sample.consensus_label_id else None


@extend_schema(
    parameters=[
        OpenApiParameter(
            "state",
            str,
            description="Only samples in these consensus states, comma-separated: "
            + ", ".join(STATES)
            + ".",
        ),
        OpenApiParameter(
            "label",
            str,
            description="Only samples whose consensus label is this class (id or name).",
        ),
    ]
)
class ConsensusViewSet(ProjectScopedMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """Each sample's consensus state and label, oldest first, cursor-paginated."""

    serializer_class = ConsensusSerializer
    queryset = Sample.objects.none()
    filter_backends = []  # the two filters below are parsed and checked by hand

    def get_project_queryset(self, project):
        query = Sample.objects.filter(project=project).select_related("consensus_label")
        params = self.request.query_params
        if params.get("state"):
            states = [s.strip() for s in params["state"].split(",") if s.strip()]
            unknown = [s for s in states if s not in STATES]
            if unknown:
                raise ValidationError(
                    {
                        "state": f"Unknown state {unknown[0][:40]!r}; use one of: {', '.join(STATES)}."
                    }
                )
            query = query.filter(consensus_state__in=states)
        if params.get("label"):
            query = query.filter(consensus_label=resolve_label(project, params["label"]))
        return query


# --- adjudication -------------------------------------------------------------------------------


@extend_schema_field(
    {"oneOf": [{"type": "integer"}, {"type": "string"}], "description": "Class id or name."}
)
class LabelRefField(serializers.Field):
    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int | str) or data == "":
            raise serializers.ValidationError("Give the label class's id or name.")
        return data

    def to_representation(self, value):
        return value


class AdjudicateSerializer(serializers.Serializer):
    label = LabelRefField()
    note = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=MAX_NOTE_CHARS
    )
    gold = serializers.BooleanField(
        required=False, default=False, help_text="Mark as a reference answer (owners only)."
    )
    review = serializers.ChoiceField(
        choices=REVIEWS,
        required=False,
        allow_null=True,
        default=None,
        help_text="`label_error`: this settles a suspected label error (monitoring's list), "
        "which someone who labelled the sample may not.",
    )


class AdjudicationSerializer(serializers.ModelSerializer):
    label_name = serializers.CharField(source="label.name", read_only=True)
    by = serializers.CharField(source="by.username", read_only=True)
    consensus_state = serializers.CharField(source="sample.consensus_state", read_only=True)
    consensus_label = serializers.IntegerField(
        source="sample.consensus_label_id", read_only=True, allow_null=True
    )

    class Meta:
        model = Adjudication
        fields = [
            "id",
            "sample",
            "label",
            "label_name",
            "by",
            "gold",
            "note",
            "created_at",
            "consensus_state",
            "consensus_label",
        ]


class AdjudicateViewSet(viewsets.GenericViewSet):
    """Settle a sample's consensus (domain experts and owners)."""

    serializer_class = AdjudicateSerializer
    queryset = Adjudication.objects.none()
    pagination_class = None
    filter_backends = []

    @extend_schema(
        request=AdjudicateSerializer,
        responses={201: AdjudicationSerializer},
        operation_id="v1_projects_samples_adjudicate_create",
    )
    def create(self, request, project_pk, sample_pk):
        sample = get_sample_for_user(
            request.user, project_pk, sample_pk, capability=Capability.ADJUDICATE
        )
        project = sample.project
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        if data["gold"] and not role_can(project.role, Capability.MANAGE):
            raise PermissionDenied("Only owners mark an answer as gold.")
        label = resolve_label(project, data["label"])
        try:
            adjudication = sample_adjudicate(
                sample=sample,
                by=request.user,
                label=label,
                note=data["note"],
                gold=data["gold"],
                review=data["review"],
            )
        except DjangoValidationError as exc:
            raise ValidationError(exc.message_dict) from exc
        return Response(AdjudicationSerializer(adjudication).data, status=status.HTTP_201_CREATED)


# --- agreement report -----------------------------------------------------------------------


class MetricSerializer(serializers.Serializer):
    value = serializers.FloatField(allow_null=True)
    items = serializers.IntegerField()
    reason = serializers.CharField(help_text="Why value is null.")
    detail = serializers.CharField(help_text="Which items or pairs were used.")


class AnnotatorAgreementSerializer(serializers.Serializer):
    annotator = serializers.CharField(help_text="Username.")
    labels = serializers.IntegerField()
    compared = serializers.IntegerField(
        help_text="Their labelled samples that others labelled too and that have a consensus."
    )
    agreement_with_consensus = serializers.FloatField(allow_null=True)
    kappa_with_consensus = MetricSerializer()
    labelled_seconds = serializers.FloatField()
    labels_per_hour = serializers.FloatField(allow_null=True)
    median_seconds = serializers.FloatField(allow_null=True)


class PairKappaSerializer(serializers.Serializer):
    a = serializers.CharField()
    b = serializers.CharField()
    items = serializers.IntegerField()
    kappa = serializers.FloatField(allow_null=True)
    agreement = serializers.FloatField()
    reason = serializers.CharField()


class PairConfusionSerializer(serializers.Serializer):
    classes = serializers.ListField(child=serializers.CharField())
    counts = serializers.ListField(child=serializers.ListField(child=serializers.IntegerField()))
    specific_agreement = serializers.ListField(child=serializers.FloatField(allow_null=True))


@extend_schema_serializer(many=False)
class AgreementSerializer(serializers.Serializer):
    labels = serializers.IntegerField()
    items = serializers.IntegerField()
    annotators = serializers.IntegerField()
    items_multi = serializers.IntegerField(help_text="Samples labelled by two or more annotators.")
    classes = serializers.ListField(child=serializers.CharField())
    observed_agreement = MetricSerializer()
    cohen_kappa = MetricSerializer()
    fleiss_kappa = MetricSerializer()
    krippendorff_alpha = MetricSerializer()
    per_annotator = AnnotatorAgreementSerializer(many=True)
    pairs = PairKappaSerializer(many=True)
    confusion = PairConfusionSerializer(allow_null=True)


class AgreementViewSet(ProjectScopedMixin, viewsets.GenericViewSet):
    """Project-level agreement (Cohen's and Fleiss' kappa, Krippendorff's alpha)
    and per-annotator agreement with consensus and throughput."""

    serializer_class = AgreementSerializer
    queryset = Sample.objects.none()
    pagination_class = None
    filter_backends = []

    @extend_schema(
        responses=AgreementSerializer,
        operation_id="v1_projects_agreement_retrieve",
        parameters=[
            OpenApiParameter(
                "min_pair_items",
                OpenApiTypes.INT,
                description="With more than two annotators, pairs sharing fewer samples are "
                "left out of Cohen's kappa (default 10).",
            )
        ],
    )
    def list(self, request, project_pk):
        raw = request.query_params.get("min_pair_items", "10")
        if not raw.isdigit() or not 1 <= int(raw) <= 100_000:
            raise ValidationError(
                {"min_pair_items": f"Expected a whole number ≥ 1, got {raw[:20]!r}."}
            )
        report = project_agreement(project=self.get_project(), min_pair_items=int(raw))
        return Response(AgreementSerializer(asdict(report)).data)
