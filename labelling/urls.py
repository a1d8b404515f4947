from django.urls import path

from .views import projects

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
    # Samples browser, sample page, cleaning
    # Review, consensus, agreement
    # Import and export
]
