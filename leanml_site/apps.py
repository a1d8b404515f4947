from django.apps import AppConfig


class LeanmlSiteConfig(AppConfig):
    name = "leanml_site"
    verbose_name = "LeanML"
