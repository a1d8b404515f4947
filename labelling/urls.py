from django.urls import path

from .views import importing, projects, review, samples
from .views import labelling as labelling_views

app_name = "labelling"

urlpatterns = [
    # Projects, settings, members, audit
    path("", projects.project_list, name="project_list"),
    path("projects/new/", projects.project_create_view, name="project_create"),
    path("projects/<int:project_pk>/", projects.project_detail, name="project_detail"),
    path("projects/<int:project_pk>/settings/", projects.project_settings, name="project_settings"),
    path("projects/<int:project_pk>/members/", projects.members, name="members"),
    path(
        "projects/<int:project_pk>/members/<int:membership_pk>/remove/",
        projects.member_remove,
        name="member_remove",
    ),
    path("projects/<int:project_pk>/audit/", projects.audit, name="audit"),
    # Labelling page and queue
    path("projects/<int:project_pk>/label/", labelling_views.label, name="label"),
    path("projects/<int:project_pk>/label/card/", labelling_views.label_card, name="label_card"),
    path(
        "projects/<int:project_pk>/label/submit/", labelling_views.label_submit, name="label_submit"
    ),
    path(
        "projects/<int:project_pk>/label/release/",
        labelling_views.label_release,
        name="label_release",
    ),
    # Samples browser, sample page, cleaning
    path("projects/<int:project_pk>/samples/", samples.sample_list, name="sample_list"),
    path(
        "projects/<int:project_pk>/samples/<int:sample_pk>/",
        samples.sample_detail,
        name="sample_detail",
    ),
    path(
        "projects/<int:project_pk>/samples/<int:sample_pk>/revise/",
        samples.sample_revise,
        name="sample_revise",
    ),
    path(
        "projects/<int:project_pk>/samples/<int:sample_pk>/flag/",
        samples.sample_flag_view,
        name="sample_flag",
    ),
    path(
        "projects/<int:project_pk>/samples/<int:sample_pk>/flags/<int:flag_pk>/resolve/",
        samples.flag_resolve_view,
        name="flag_resolve",
    ),
    path("projects/<int:project_pk>/duplicates/", samples.duplicates, name="duplicates"),
    path(
        "projects/<int:project_pk>/duplicates/merge/",
        samples.duplicates_merge_view,
        name="duplicates_merge",
    ),
    # Review, consensus, agreement
    path("projects/<int:project_pk>/review/", review.review, name="review"),
    path(
        "projects/<int:project_pk>/review/<int:sample_pk>/adjudicate/",
        review.adjudicate,
        name="adjudicate",
    ),
    path("projects/<int:project_pk>/agreement/", review.agreement, name="agreement"),
    # Import and export
    path("projects/<int:project_pk>/imports/", importing.import_list, name="import_list"),
    path(
        "projects/<int:project_pk>/imports/<int:job_pk>/",
        importing.import_detail,
        name="import_detail",
    ),
    path("projects/<int:project_pk>/export/", importing.export, name="export"),
]
