from django.contrib import admin

from .models import (
    Alert,
    ApiKey,
    DriftCheck,
    GroundTruth,
    MetricWindow,
    MonitoringCursor,
    MonitoringSettings,
    PredictionLog,
    SurfacedSample,
    SurfacingRun,
)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "project", "prefix", "scopes", "created_at", "revoked_at"]
    list_filter = ["project"]
    # The hash is useless to a person and the key is made by the service only.
    exclude = ["secret_hash"]
    readonly_fields = ["prefix", "created_by", "created_at", "last_used_at"]


@admin.register(PredictionLog)
class PredictionLogAdmin(admin.ModelAdmin):
    list_display = ["request_id", "project", "timestamp", "model_version", "predicted"]
    list_filter = ["project"]
    search_fields = ["request_id"]
    raw_id_fields = ["model_version"]


@admin.register(GroundTruth)
class GroundTruthAdmin(admin.ModelAdmin):
    list_display = ["request_id", "project", "label", "source", "kind", "created_at"]
    list_filter = ["project", "source"]
    search_fields = ["request_id"]


@admin.register(MonitoringSettings)
class MonitoringSettingsAdmin(admin.ModelAdmin):
    list_display = ["project", "psi_threshold", "share_points", "surfacing_budget"]


@admin.register(MonitoringCursor)
class MonitoringCursorAdmin(admin.ModelAdmin):
    list_display = ["project", "logs_through", "truth_through", "updated_at"]


@admin.register(MetricWindow)
class MetricWindowAdmin(admin.ModelAdmin):
    list_display = ["project", "model_version", "granularity", "start", "segment"]
    list_filter = ["project", "granularity"]
    raw_id_fields = ["model_version"]


@admin.register(DriftCheck)
class DriftCheckAdmin(admin.ModelAdmin):
    list_display = ["project", "model_version", "window_start", "window_end", "n_current"]
    list_filter = ["project"]
    raw_id_fields = ["model_version"]


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    list_display = ["project", "kind", "field", "measure", "value", "created_at", "acknowledged_at"]
    list_filter = ["project", "kind"]
    raw_id_fields = ["drift_check"]


@admin.register(SurfacingRun)
class SurfacingRunAdmin(admin.ModelAdmin):
    list_display = ["project", "state", "budget", "candidates", "created_at"]
    list_filter = ["project", "state"]


@admin.register(SurfacedSample)
class SurfacedSampleAdmin(admin.ModelAdmin):
    list_display = ["sample", "strategy", "score", "run"]
    list_filter = ["strategy"]
    raw_id_fields = ["run", "sample", "prediction_log"]
