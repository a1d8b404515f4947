import factory
from django.contrib.auth import get_user_model

from labelling.models import LabelClass, Membership, Project, Sample
from leanml_site.roles import Role
from ml.hashing import content_hash, split_for


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("pw-for-tests-1")


class ProjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Project

    name = factory.Sequence(lambda n: f"Project {n}")
    fields = factory.LazyFunction(lambda: [{"name": "text", "kind": "text", "shown": True}])
    overlap = 1
    holdout_fraction = 0.2


class LabelClassFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = LabelClass

    project = factory.SubFactory(ProjectFactory)
    name = factory.Sequence(lambda n: f"class{n}")
    order = factory.Sequence(int)


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    project = factory.SubFactory(ProjectFactory)
    user = factory.SubFactory(UserFactory)
    role = Role.EXPERT


class SampleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Sample

    project = factory.SubFactory(ProjectFactory)
    external_id = factory.Sequence(lambda n: f"s{n}")
    data = factory.Sequence(lambda n: {"text": f"sample text {n}"})
    content_hash = factory.LazyAttribute(lambda o: content_hash(o.data))
    split = factory.LazyAttribute(lambda o: split_for(o.external_id, o.project.holdout_fraction))
