from django.contrib import admin

from . import models


class MembershipInline(admin.TabularInline):
    model = models.Membership
    extra = 0
    raw_id_fields = ("user",)


class LabelClassInline(admin.TabularInline):
    model = models.LabelClass
    extra = 0


@admin.register(models.Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ("name", "overlap", "holdout_fraction", "created_at")
    search_fields = ("name",)
    inlines = [LabelClassInline, MembershipInline]


@admin.register(models.Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ("user", "project", "role")
    list_filter = ("role", "project")
    raw_id_fields = ("user",)


@admin.register(models.LabelClass)
class LabelClassAdmin(admin.ModelAdmin):
    list_display = ("name", "project", "hotkey", "order")
    list_filter = ("project",)


@admin.register(models.Sample)
class SampleAdmin(admin.ModelAdmin):
    list_display = ("external_id", "project", "split", "status", "consensus_state", "source")
    list_filter = ("project", "split", "status", "consensus_state", "source")
    search_fields = ("external_id",)
    raw_id_fields = ("consensus_label",)
    show_full_result_count = False


@admin.register(models.SampleRevision)
class SampleRevisionAdmin(admin.ModelAdmin):
    list_display = ("sample", "number", "author", "created_at")
    raw_id_fields = ("sample",)


class AppendOnlyAdmin(admin.ModelAdmin):
    """Labels and decisions are history: readable in the admin, never edited there."""

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(models.Annotation)
class AnnotationAdmin(AppendOnlyAdmin):
    list_display = ("sample", "annotator", "kind", "label", "origin", "seconds", "created_at")
    list_filter = ("project", "kind", "origin")
    raw_id_fields = ("sample",)
    show_full_result_count = False


@admin.register(models.Adjudication)
class AdjudicationAdmin(AppendOnlyAdmin):
    list_display = ("sample", "label", "by", "gold", "created_at")
    raw_id_fields = ("sample",)


@admin.register(models.Flag)
class FlagAdmin(admin.ModelAdmin):
    list_display = ("sample", "kind", "created_by", "created_at", "resolved_at")
    list_filter = ("kind",)
    raw_id_fields = ("sample", "duplicate_of")


@admin.register(models.QueueItem)
class QueueItemAdmin(admin.ModelAdmin):
    list_display = ("sample", "project", "priority", "strategy", "state", "claims", "labels_done")
    list_filter = ("project", "state", "strategy")
    raw_id_fields = ("sample",)
    show_full_result_count = False


@admin.register(models.Lease)
class LeaseAdmin(admin.ModelAdmin):
    list_display = ("item", "user", "expires_at")
    raw_id_fields = ("item",)


@admin.register(models.ImportJob)
class ImportJobAdmin(admin.ModelAdmin):
    list_display = ("original_name", "project", "format", "state", "progress", "created_at")
    list_filter = ("state", "format")
