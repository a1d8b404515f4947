"""API keys: create (the secret shown once), revoke, and check a presented key."""

import hashlib
import hmac
import secrets
from datetime import timedelta

from django.utils import timezone

from leanml_site.audit import audit_record
from leanml_site.errors import Refusal

from ..models import ApiKey

# A key is "<prefix>.<secret>": the prefix finds the row, the secret proves it.
PREFIX_BYTES = 6
SECRET_BYTES = 32
# last_used_at is for people ("is this key still in use?"): a write per
# minute at most, not one per call.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class ApiKeyError(Refusal):
    """An API key cannot be created as asked (name, scopes)."""


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def api_key_create(*, project, by, name, scopes) -> tuple[ApiKey, str]:
    """The new key and its full text ``<prefix>.<secret>``, which is not
    stored anywhere: the caller shows it once."""
    name = (name or "").strip()
    if not name:
        raise ApiKeyError("Give the key a name (which client uses it).", "name")
    if len(name) > ApiKey._meta.get_field("name").max_length:
        raise ApiKeyError("The name is longer than 100 characters.", "name")
    scopes = sorted(set(scopes or []))
    valid = set(ApiKey.Scope.values)
    unknown = [s for s in scopes if s not in valid]
    if unknown or not scopes:
        raise ApiKeyError(
            f"Scopes must be among {', '.join(sorted(valid))} (got {', '.join(unknown) or 'none'}).",
            "scopes",
        )
    prefix = secrets.token_hex(PREFIX_BYTES)
    secret = secrets.token_urlsafe(SECRET_BYTES)
    key = ApiKey.objects.create(
        project=project,
        name=name,
        prefix=prefix,
        secret_hash=_hash(secret),
        scopes=scopes,
        created_by=by,
    )
    audit_record(
        actor=by,
        project=project,
        action="api_key.create",
        target=key,
        after={"name": name, "prefix": prefix, "scopes": scopes},
    )
    return key, f"{prefix}.{secret}"


def api_key_revoke(*, key, by) -> ApiKey:
    if key.revoked_at is not None:
        return key
    key.revoked_at = timezone.now()
    key.revoked_by = by
    key.save(update_fields=["revoked_at", "revoked_by"])
    audit_record(
        actor=by,
        project=key.project,
        action="api_key.revoke",
        target=key,
        after={"name": key.name, "prefix": key.prefix},
    )
    return key


def api_key_check(presented: str) -> ApiKey | None:
    """The active key ``presented`` is, or None. The secret's hash is compared
    in constant time, so timing tells nothing about how much of it matched."""
    prefix, dot, secret = (presented or "").strip().partition(".")
    if not dot or not prefix or not secret:
        return None
    key = (
        ApiKey.objects.select_related("project")
        .filter(prefix=prefix, revoked_at__isnull=True)
        .first()
    )
    # Hash even when no key has the prefix: an unknown prefix costs the same.
    digest = _hash(secret)
    if key is None or not hmac.compare_digest(digest, key.secret_hash):
        return None
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key
