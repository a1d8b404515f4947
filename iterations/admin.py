from django.contrib import admin

from . import models


@admin.register(models.ModelSettings)
class ModelSettingsAdmin(admin.ModelAdmin):
    list_display = ("project", "value_unit", "useful_baseline", "compare_last", "retrain_every")


@admin.register(models.EnsembleConfig)
class EnsembleConfigAdmin(admin.ModelAdmin):
    list_display = ("project", "number", "combiner", "created_by", "created_at")
    list_filter = ("project",)


@admin.register(models.KeywordRuleSet)
class KeywordRuleSetAdmin(admin.ModelAdmin):
    list_display = ("project", "number", "created_by", "created_at")
    list_filter = ("project",)


class WriteOnceAdmin(admin.ModelAdmin):
    """Evidence is written once by the services; the admin only reads it."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(models.DatasetSnapshot)
class DatasetSnapshotAdmin(WriteOnceAdmin):
    list_display = ("project", "content_hash", "row_count", "created_at")


@admin.register(models.ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ("project", "number", "status", "snapshot", "created_at")
    list_filter = ("project", "status")
    readonly_fields = ("status",)  # transitions go through the services (and the audit log)


@admin.register(models.Artifact)
class ArtifactAdmin(WriteOnceAdmin):
    list_display = ("version", "key", "sha256", "size_bytes", "source")


@admin.register(models.TrainingJob)
class TrainingJobAdmin(admin.ModelAdmin):
    list_display = ("version", "state", "progress", "message", "created_at", "finished_at")
    list_filter = ("state",)
    readonly_fields = ("state", "progress", "log", "error", "celery_task_id")


@admin.register(models.RegressionReport)
class RegressionReportAdmin(WriteOnceAdmin):
    list_display = ("candidate", "baseline", "passed", "content_hash", "created_at")


@admin.register(models.Iteration)
class IterationAdmin(admin.ModelAdmin):
    list_display = ("title", "project", "status", "candidate", "created_at")
    list_filter = ("project", "status")


@admin.register(models.Decision)
class DecisionAdmin(WriteOnceAdmin):
    list_display = ("iteration", "version", "verdict", "by", "created_at")
