from rest_framework.routers import DefaultRouter

from . import consensus, importing, projects, queue, samples

router = DefaultRouter()
router.include_format_suffixes = False
router.register("projects", projects.ProjectViewSet, basename="project")
router.register(
    r"projects/(?P<project_pk>\d+)/label-classes",
    projects.LabelClassViewSet,
    basename="label-class",
)
router.register(
    r"projects/(?P<project_pk>\d+)/members", projects.MembershipViewSet, basename="member"
)
# Samples, revisions, flags (labelling/api/samples.py)
router.register(r"projects/(?P<project_pk>\d+)/samples", samples.SampleViewSet, basename="sample")
router.register(
    r"projects/(?P<project_pk>\d+)/samples/(?P<sample_pk>\d+)/revisions",
    samples.RevisionViewSet,
    basename="sample-revision",
)
router.register(
    r"projects/(?P<project_pk>\d+)/samples/(?P<sample_pk>\d+)/flags",
    samples.FlagViewSet,
    basename="sample-flag",
)

# Queue next / submit, labels (labelling/api/queue.py)
router.register(r"projects/(?P<project_pk>\d+)/queue", queue.QueueViewSet, basename="queue")
router.register(r"projects/(?P<project_pk>\d+)/labels", queue.LabelViewSet, basename="label")

# Consensus, adjudication, agreement (labelling/api/consensus.py)
router.register(
    r"projects/(?P<project_pk>\d+)/consensus", consensus.ConsensusViewSet, basename="consensus"
)
router.register(
    r"projects/(?P<project_pk>\d+)/samples/(?P<sample_pk>\d+)/adjudicate",
    consensus.AdjudicateViewSet,
    basename="adjudicate",
)
router.register(
    r"projects/(?P<project_pk>\d+)/agreement", consensus.AgreementViewSet, basename="agreement"
)

# Import jobs and export (labelling/api/importing.py)
router.register(
    r"projects/(?P<project_pk>\d+)/imports", importing.ImportJobViewSet, basename="import-job"
)
router.register(r"projects/(?P<project_pk>\d+)/export", importing.ExportViewSet, basename="export")

urlpatterns = [
    *router.urls,
]
