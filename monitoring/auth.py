"""How machine clients authenticate (API keys), are throttled, and reach a
project: the one place a monitoring endpoint decides access."""

from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied
from django.http import Http404
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, throttling
from rest_framework.settings import api_settings

from labelling.permissions import get_project_for_user
from leanml_site.roles import Capability

from .models import ApiKey
from .services.api_keys import api_key_check

KEYWORD = "Api-Key"


class ApiKeyClient(AnonymousUser):
    """request.user for a call made with an API key: authenticated, but
    nobody's account, so no user-only endpoint (or membership) applies."""

    def __init__(self, key):
        self.key = key

    @property
    def is_authenticated(self):
        return True

    def __str__(self):
        return f"API key {self.key.prefix}"


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """``Authorization: Api-Key <prefix>.<secret>``."""

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        keyword, _, presented = header.partition(" ")
        if keyword != KEYWORD:
            return None
        key = api_key_check(presented)
        if key is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
        return ApiKeyClient(key), key

    def authenticate_header(self, request):
        return KEYWORD


class ApiKeyRateThrottle(throttling.SimpleRateThrottle):
    """Per key, at the ``api_key`` rate; members calling with their own login
    share the ``user`` rate. The rate is read on every call (not when the
    class is defined), so settings can change it."""

    def get_rate(self):
        return None  # chosen per request in allow_request

    def allow_request(self, request, view):
        if isinstance(request.auth, ApiKey):
            self.scope, ident = "api_key", f"key-{request.auth.pk}"
        elif request.user and request.user.is_authenticated:
            self.scope, ident = "user", f"user-{request.user.pk}"
        else:
            return True  # refused by authentication anyway
        self.rate = api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)
        if not self.rate:
            return True
        self.num_requests, self.duration = self.parse_rate(self.rate)
        self.key = self.cache_format % {"scope": self.scope, "ident": ident}
        self.history = self.cache.get(self.key, [])
        self.now = self.timer()
        while self.history and self.history[-1] <= self.now - self.duration:
            self.history.pop()
        if len(self.history) >= self.num_requests:
            return self.throttle_failure()
        return self.throttle_success()


def get_project_for_client(request, project_pk, *, scope):
    """The project a call may write to, for an API key with ``scope`` or a
    member who may train models (data scientists and owners; scripts use
    their login or token). A key of another project gets 404, like a
    non-member: nothing is told about projects it cannot reach."""
    key = request.auth if isinstance(request.auth, ApiKey) else None
    if key is None:
        return get_project_for_user(request.user, project_pk, capability=Capability.TRAIN)
    if str(key.project_id) != str(project_pk):
        raise Http404("No such project.")
    if not key.has_scope(scope):
        raise PermissionDenied(f"This API key lacks the “{scope}” scope.")
    project = key.project
    project.role = None
    project.role_label = str(key)
    return project


class ApiKeyScheme(OpenApiAuthenticationExtension):
    """How the schema (and /api/docs/) describes the API-key header."""

    target_class = "monitoring.auth.ApiKeyAuthentication"
    name = "apiKeyAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Api-Key <prefix>.<secret>`: a project API key.",
        }
