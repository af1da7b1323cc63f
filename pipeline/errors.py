"""The exceptions a user of catalog-tagger can see.

Every message names the problem, the offending value and, where there is one, the fix.
"""

from __future__ import annotations


class TaggerError(Exception):
    """Base class: the CLI prints these without a traceback and exits with status 2."""


class ConfigError(TaggerError):
    """A setting is missing or has an impossible value."""


class SpecError(TaggerError):
    """A dataset spec is unknown or malformed."""


class CatalogError(TaggerError):
    """A catalog file cannot be read as the catalog contract (format, encoding, columns)."""

    def __init__(self, message: str, *, path: str | None = None, row: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}"
            if row is not None:
                where += f", row {row}"
            where += ": "
        super().__init__(where + message)
        self.path = path
        self.row = row


class ServiceError(TaggerError):
    """An external or embedded service (Postgres, MLflow, Triton) is not reachable or failed to start."""


class TagLibraryError(TaggerError):
    """The tag library is missing something the caller needs, or would become inconsistent."""


class ValidationFailed(TaggerError):
    """A catalog snapshot got the verdict *fail*: it must not be trained on."""


class TrainingError(TaggerError):
    """Training cannot start or did not produce a usable bundle."""


class BundleError(TaggerError):
    """A tagger bundle folder is incomplete or inconsistent (e.g. label map vs weights)."""


class RegistryError(TaggerError):
    """A model-registry operation is impossible (unknown version, rejected version, no previous champion...)."""


class GateRejected(RegistryError):
    """The promotion gate rejected a candidate; ``failed_rules`` names every rule it broke."""

    def __init__(self, message: str, failed_rules: list[str] | None = None):
        super().__init__(message)
        self.failed_rules = failed_rules or []


class DeployError(TaggerError):
    """A deploy to Triton failed; the previously served version keeps serving."""


class ServingError(TaggerError):
    """A request to the tagger service failed or was refused. ``refused``: the server answered INVALID_ARGUMENT
    (this input will never be tagged as it is; retrying it is pointless), as opposed to being unreachable or slow."""

    def __init__(self, message: str, *, refused: bool = False):
        super().__init__(message)
        self.refused = refused


class ReviewError(TaggerError):
    """A review decision is impossible (unknown or already decided item, an action its kind does not take)."""
