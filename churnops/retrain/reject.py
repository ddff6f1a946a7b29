"""Step 6b: a challenger the gate turned down is recorded as rejected, with its reasons.

The version stays in the registry (versions are immutable, and a rejected model is evidence), and
the history entry says who decided, when and why: every failed gate check, with its figures.
"""

from __future__ import annotations

from typing import Any

from churnops.errors import ChurnOpsError
from churnops.registry import Registry
from churnops.retrain.promote import ACTOR


def reject(
    registry: Registry,
    version: str,
    *,
    reasons: list[str],
    details: dict[str, Any],
    actor: str = ACTOR,
) -> dict[str, Any]:
    """Record the challenger as rejected, with every failed check as a reason."""
    if not reasons:
        raise ChurnOpsError(f"refusing to reject {version} without a reason")
    return registry.record_decision(
        version, "rejected", actor=actor, reason="; ".join(reasons), details=details
    )
