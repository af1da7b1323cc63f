"""Stage 5, registry: an evaluated bundle in, an MLflow model version with aliases, a gate verdict and review out.

``versions`` (register a bundle, read versions and their artifacts), ``aliases`` (champion / challenger
moves with their audit trail), ``review`` (reviewer decisions), ``gate`` (the promotion policy),
``compare`` (versions side by side), ``pyfunc_model`` (the bundle as an MLflow pyfunc). The names below are the
registry's public API: callers use ``from pipeline import registry`` and ``registry.promote(...)``.
"""

from pipeline.registry.aliases import champion_stack, get_alias, history, promote, refusal, rollback, set_alias
from pipeline.registry.review import review, wait_for_review
from pipeline.registry.versions import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS,
    AliasMove,
    ModelVersionRef,
    bundle_digest,
    bundle_for_version,
    check_bundle,
    default_actor,
    get_version,
    list_versions,
    read_metrics,
    register_bundle,
    version_metrics,
    version_plots,
)

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "PREVIOUS",
    "AliasMove",
    "ModelVersionRef",
    "bundle_digest",
    "bundle_for_version",
    "champion_stack",
    "check_bundle",
    "default_actor",
    "get_alias",
    "get_version",
    "history",
    "list_versions",
    "promote",
    "read_metrics",
    "refusal",
    "register_bundle",
    "review",
    "rollback",
    "set_alias",
    "version_metrics",
    "version_plots",
    "wait_for_review",
]
