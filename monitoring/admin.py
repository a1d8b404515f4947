from django.contrib import admin

from .models import ApiKey, GroundTruth, PredictionLog


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
