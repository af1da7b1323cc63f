"""Registry aliases: a version, an actor and a reason in, an audited alias move out; moves and champion stack back.

Aliases: ``challenger`` (newest candidate), ``champion`` (serving), ``previous`` (the champion before).
MLflow keeps no history of alias moves, so every move is written to ``alias_events`` in Postgres, inside a
transaction that holds an advisory lock on the model name: concurrent promotions are serialized and the audit
table and the aliases never disagree. The champion stack (for rollback) is replayed from that table. The lock,
the recording of a move and :class:`AliasMove` sit in :mod:`pipeline.registry.versions` (registering moves
``challenger`` with them); this module imports versions, never the other way round.
"""

from __future__ import annotations

import logging
from dataclasses import asdict

import sqlalchemy as sa

from pipeline import db
from pipeline.core import tracking
from pipeline.core.services import get_engine
from pipeline.errors import RegistryError
from pipeline.registry.versions import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS,
    AliasMove,
    _alias_version,
    _locked,
    _move_alias,
    _now,
    _point,
    _record,
    get_version,
)
from pipeline.settings import Settings

log = logging.getLogger(__name__)


def get_alias(settings: Settings, alias: str) -> int | None:
    """The version an alias points at (resolved with get_model_version_by_alias), or None."""
    return _alias_version(tracking.client(settings), settings.registered_model_name, alias)


def set_alias(settings: Settings, alias: str, version: int | None, actor: str, reason: str | None = None) -> AliasMove:
    """Point ``alias`` at ``version`` (None clears it) and audit the move; ``champion`` goes through promote."""
    if alias == CHAMPION:
        if version is None:
            raise RegistryError("the champion alias cannot be cleared; use `tagger models rollback`")
        return promote(settings, version, actor=actor, reason=reason)
    return _move_alias(settings, alias, version, actor, reason)


def refusal(mv, gate_verdict: str | None = None) -> str | None:
    """Why a version may not become champion (rejected by the gate or a reviewer), or None.

    Both the version's ``gate_verdict`` tag and the caller's verdict count: a stale "approve" from a caller
    cannot override a later "reject" on the version.
    """
    tags = mv.tags or {}
    verdicts = {tags.get("gate_verdict"), gate_verdict} - {None, ""}
    if tags.get("approval", "").lower() == "rejected":
        who = tags.get("approved_by", "a reviewer")
        return f"it was rejected by {who} ({tags.get('approval_reason') or 'no reason given'})"
    if "reject" in verdicts:
        return f"the gate rejected it ({tags.get('gate_failed_rules', '[]')})"
    if "needs-review" in verdicts and tags.get("approval", "").lower() != "approved":
        return (
            f"the gate asked for a review and no reviewer approved it yet "
            f"(`tagger models review {mv.version} --approve`, or tag approval=approved in the MLflow UI)"
        )
    return None


def promote(
    settings: Settings, version: int, *, actor: str, reason: str | None = None, gate_verdict: str | None = None
) -> AliasMove:
    """Move ``champion`` to ``version``; the old champion becomes ``previous``. No-op if already champion.

    Raises:
        RegistryError: the version does not exist, or the gate or a reviewer rejected it.
    """
    client = tracking.client(settings)
    name = settings.registered_model_name
    with _locked(settings) as conn:
        mv = get_version(settings, version, client)  # read inside the lock: a reviewer may just have decided
        why = refusal(mv, gate_verdict)
        if why:
            raise RegistryError(f"cannot promote version {version} of {name!r}: {why}")
        verdict = (mv.tags or {}).get("gate_verdict") or gate_verdict
        current = _alias_version(client, name, CHAMPION)
        move = AliasMove(name, CHAMPION, "promote", current, int(version), actor, reason, verdict, _now())
        if current == int(version):
            return AliasMove(**{**asdict(move), "changed": False})
        _record(conn, move, {"previous": current})
        _point(client, name, CHAMPION, int(version))
        _point(client, name, PREVIOUS, current)
        if _alias_version(client, name, CHALLENGER) == int(version):
            _point(client, name, CHALLENGER, None)
    log.info("champion of %s: %s -> %s (%s)", name, current, version, actor)
    return move


def champion_stack(settings: Settings) -> list[int]:
    """Champions in order, replayed from the audit table (promote pushes, rollback pops)."""
    stack: list[int] = []
    for ev in history(settings):
        if ev["alias"] != CHAMPION:
            continue
        if ev["action"] == "promote":
            if not stack and ev["from_version"] is not None:
                stack.append(ev["from_version"])
            stack.append(ev["to_version"])
        elif ev["action"] == "rollback" and stack:
            stack.pop()
    return stack


def rollback(settings: Settings, *, actor: str, reason: str | None = None) -> AliasMove:
    """Return ``champion`` to the previous champion (repeatable: walks back the promotion history).

    Raises:
        RegistryError: there is no champion, or no previous champion to return to.
    """
    client = tracking.client(settings)
    name = settings.registered_model_name
    with _locked(settings) as conn:
        current = _alias_version(client, name, CHAMPION)
        if current is None:
            raise RegistryError(f"model {name!r} has no champion, so there is nothing to roll back")
        stack = champion_stack(settings)
        if stack and stack[-1] == current:
            stack.pop()
        else:  # the alias was moved outside this tool: trust MLflow's `previous`
            stack = [v for v in (_alias_version(client, name, PREVIOUS),) if v is not None]
        if not stack:
            raise RegistryError(
                f"model {name!r} has no previous champion to roll back to (champion is version {current}); "
                "`tagger models history` shows the moves"
            )
        target, below = stack[-1], (stack[-2] if len(stack) > 1 else None)
        move = AliasMove(name, CHAMPION, "rollback", current, target, actor, reason, None, _now())
        _record(conn, move, {"previous": below})
        _point(client, name, CHAMPION, target)
        _point(client, name, PREVIOUS, below)
        client.set_model_version_tag(name, str(current), "rolled_back", f"{move.at} by {actor}")
    log.info("champion of %s rolled back: %s -> %s (%s)", name, current, target, actor)
    return move


def history(settings: Settings) -> list[dict]:
    """Every alias move of this model (oldest first) from the audit table."""
    t = db.alias_events
    with get_engine(settings).connect() as conn:
        rows = conn.execute(
            sa.select(t).where(t.c.model_name == settings.registered_model_name).order_by(t.c.id)
        ).mappings()
        return [{**r, "created_at": r["created_at"].isoformat(timespec="seconds")} for r in rows]
