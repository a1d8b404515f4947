from django.apps import AppConfig


class IterationsConfig(AppConfig):
    name = "iterations"
