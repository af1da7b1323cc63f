"""Registry review: a reviewer's decision in (as version tags), or awaited; the decision tags out.

The tags are the ones a reviewer can also set in the MLflow UI (``approval``, ``approved_by``,
``approval_reason``); :func:`pipeline.registry.aliases.refusal` reads them when a version is promoted.
"""

from __future__ import annotations

import logging
import time

from pipeline.core import tracking
from pipeline.errors import RegistryError
from pipeline.registry.versions import get_version
from pipeline.settings import Settings

log = logging.getLogger(__name__)


def decision(settings: Settings, version: int) -> str | None:
    """``approved`` / ``rejected`` once a reviewer decided on the version (tag ``approval``), else None."""
    return get_version(settings, version).tags.get("approval")


def review(settings: Settings, version: int, *, approve: bool, actor: str, reason: str) -> str:
    """Record a reviewer's decision as version tags (the same tags a reviewer can set in the MLflow UI)."""
    client = tracking.client(settings)
    get_version(settings, version, client)
    decision = "approved" if approve else "rejected"
    name = settings.registered_model_name
    for key, value in (("approval", decision), ("approved_by", actor), ("approval_reason", reason)):
        client.set_model_version_tag(name, str(version), key, value)
    log.info("version %s of %s %s by %s", version, name, decision, actor)
    return decision


def wait_for_review(settings: Settings, version: int, *, timeout_s: float = 86400, poll_s: float = 10) -> dict:
    """Block until the version's ``approval`` tag says approved or rejected; return the decision tags.

    Raises:
        RegistryError: no decision within ``timeout_s``, or an approval tag with another value.
    """
    client = tracking.client(settings)
    deadline = time.monotonic() + timeout_s
    while True:
        tags = get_version(settings, version, client).tags or {}
        decision = tags.get("approval", "").strip().lower()
        if decision in ("approved", "rejected"):
            return {
                "approval": decision,
                "approved_by": tags.get("approved_by", "unknown (MLflow UI)"),
                "approval_reason": tags.get("approval_reason", ""),
            }
        if decision:
            raise RegistryError(f"version {version}: approval tag is {decision!r}; set it to approved or rejected")
        if time.monotonic() >= deadline:
            raise RegistryError(
                f"no review of version {version} of {settings.registered_model_name!r} within {timeout_s:.0f} s; "
                "set the version tag approval=approved|rejected in the MLflow UI or run `tagger models review`"
            )
        time.sleep(poll_s)
