"""Projects, label classes and members."""

from django.contrib.auth import get_user_model
from django.shortcuts import get_object_or_404
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from leanml_site.api import refusal
from leanml_site.roles import Capability, Role

from ..models import LabelClass, Membership, Project
from ..permissions import get_project_for_user, projects_for_user
from ..services.projects import (
    ProjectError,
    label_class_save,
    membership_remove,
    membership_set,
    project_create,
    project_update,
)
from .base import ProjectScopedMixin


class LabelClassSerializer(serializers.ModelSerializer):
    class Meta:
        model = LabelClass
        fields = ["id", "name", "description", "hotkey", "colour", "order"]


class ProjectSerializer(serializers.ModelSerializer):
    label_classes = LabelClassSerializer(many=True, required=False)
    role = serializers.SerializerMethodField()

    class Meta:
        model = Project
        fields = [
            "id",
            "name",
            "description",
            "guidelines",
            "fields",
            "overlap",
            "holdout_fraction",
            "lease_seconds",
            "label_classes",
            "role",
            "created_at",
        ]
        read_only_fields = ["created_at"]

    def get_role(self, project) -> str | None:
        return getattr(project, "role", None)


class ProjectViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """Projects the caller belongs to. Anyone may create one and becomes its owner."""

    serializer_class = ProjectSerializer
    queryset = Project.objects.none()

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return self.queryset
        return projects_for_user(self.request.user).prefetch_related("label_classes")

    def get_object(self):
        capability = Capability.VIEW if self.request.method == "GET" else Capability.MANAGE
        return get_project_for_user(self.request.user, self.kwargs["pk"], capability=capability)

    def list(self, request, *args, **kwargs):
        roles = dict(Membership.objects.filter(user=request.user).values_list("project_id", "role"))
        page = self.paginate_queryset(self.get_queryset())
        for project in page:
            project.role = roles.get(project.pk)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    def perform_create(self, serializer):
        data = dict(serializer.validated_data)
        classes = data.pop("label_classes", [])
        try:
            serializer.instance = project_create(
                by=self.request.user, label_classes=classes, **data
            )
        except ProjectError as exc:
            raise refusal(exc) from exc
        serializer.instance.role = Role.OWNER

    def perform_update(self, serializer):
        data = dict(serializer.validated_data)
        if "label_classes" in data:
            raise ValidationError({"label_classes": "Edit label classes at /label-classes/."})
        try:
            project_update(project=serializer.instance, by=self.request.user, **data)
        except ProjectError as exc:
            raise refusal(exc) from exc


class LabelClassViewSet(
    ProjectScopedMixin,
    mixins.ListModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = LabelClassSerializer
    queryset = LabelClass.objects.none()
    pagination_class = None

    def get_project_queryset(self, project):
        return LabelClass.objects.filter(project=project)

    def get_object(self):
        project = self.get_project(Capability.MANAGE)
        return get_object_or_404(LabelClass, project=project, pk=self.kwargs["pk"])

    def perform_create(self, serializer):
        project = self.get_project(Capability.MANAGE)
        label_class = LabelClass(project=project, **serializer.validated_data)
        serializer.instance = _save_or_400(label_class, self.request.user)

    def perform_update(self, serializer):
        for key, value in serializer.validated_data.items():
            setattr(serializer.instance, key, value)
        _save_or_400(serializer.instance, self.request.user)


def _save_or_400(label_class, user):
    try:
        return label_class_save(label_class=label_class, by=user)
    except ProjectError as exc:
        raise refusal(exc) from exc


class MembershipSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username")
    role = serializers.ChoiceField(choices=Role.choices)

    class Meta:
        model = Membership
        fields = ["id", "username", "role", "created_at"]
        read_only_fields = ["created_at"]


class MembershipViewSet(
    ProjectScopedMixin,
    mixins.ListModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Members of a project. Everyone in it may list them; owners add, change and remove."""

    serializer_class = MembershipSerializer
    queryset = Membership.objects.none()
    pagination_class = None

    def get_project_queryset(self, project):
        return project.memberships.select_related("user").order_by("id")

    def create(self, request, *args, **kwargs):
        project = get_project_for_user(
            request.user, kwargs["project_pk"], capability=Capability.MANAGE
        )
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        username = serializer.validated_data["user"]["username"]
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise ValidationError({"username": f"No user named '{username}'."})
        try:
            membership = membership_set(
                project=project, user=user, role=serializer.validated_data["role"], by=request.user
            )
        except ValueError as exc:
            raise ValidationError({"role": str(exc)}) from exc
        return Response(self.get_serializer(membership).data, status=status.HTTP_201_CREATED)

    def destroy(self, request, *args, **kwargs):
        project = get_project_for_user(
            request.user, kwargs["project_pk"], capability=Capability.MANAGE
        )
        membership = get_object_or_404(Membership, project=project, pk=kwargs["pk"])
        try:
            membership_remove(membership=membership, by=request.user)
        except ValueError as exc:
            raise ValidationError({"role": str(exc)}) from exc
        return Response(status=status.HTTP_204_NO_CONTENT)
