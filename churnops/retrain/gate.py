"""The promotion gate: promote a challenger only when it is really better.

Works on the plain JSON that `evaluate.compare` produced, so the decision can be re-checked later
from the stored evaluation alone. Every check is reported (passed or not) with the figures it
used, and the reasons of a rejection name each failed check.

With a champion, all must hold:
- the primary metric improves by at least the margin AND the paired interval's lower bound is > 0;
- the challenger passes the quality floor and has skill (its own interval clears chance);
- no guard metric regresses beyond its tolerance (Brier score up, recall at threshold down);
- no clear loss on a large slice (contract type, tenure band, ... from the data contract).
Without a champion (the first retrain), only the floor and the skill check apply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from churnops.wiring import GateSettings


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "detail": self.detail}


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    checks: tuple[Check, ...] = field(default=())

    @property
    def reasons(self) -> list[str]:
        """Why not: the detail of every failed check (empty when promoted)."""
        return [c.detail for c in self.checks if not c.passed]

    @property
    def summary(self) -> str:
        if self.promote:
            return "; ".join(c.detail for c in self.checks)
        return "; ".join(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        return {
            "promote": self.promote,
            "reasons": self.reasons,
            "checks": [c.to_dict() for c in self.checks],
        }


def decide(evaluation: dict[str, Any], settings: GateSettings) -> GateDecision:
    metric = evaluation["primary_metric"]
    challenger = evaluation["challenger"]
    champion = evaluation.get("champion")
    lower, _upper = challenger[f"{metric}_ci"]
    no_skill = evaluation["no_skill_value"]
    checks = [
        Check(
            "skill",
            _gt(lower, no_skill),
            f"challenger {metric} interval lower bound {_f(lower)} "
            f"{'>' if _gt(lower, no_skill) else 'does not exceed'} chance ({_f(no_skill)})",
        ),
        Check(
            "quality_floor",
            _gt(lower, settings.quality_floor),
            f"challenger {metric} lower bound {_f(lower)} "
            f"{'>' if _gt(lower, settings.quality_floor) else 'is not above'} "
            f"the floor {_f(settings.quality_floor)}",
        ),
    ]
    if champion is None:
        checks.append(Check("no_champion", True, "no champion yet: first model that passes"))
        return GateDecision(all(c.passed for c in checks), tuple(checks))

    diff = evaluation["difference"]
    point, (d_lo, d_hi) = diff["point"], diff["ci"]
    better = point >= settings.margin and _gt(d_lo, 0.0)
    checks.append(
        Check(
            "improvement",
            better,
            f"{metric} {_f(challenger[metric])} vs champion {_f(champion[metric])}: "
            f"difference {point:+.4f} (paired {evaluation['confidence']:.0%} interval "
            f"{_f(d_lo)}..{_f(d_hi)}); needs >= {settings.margin:+.4f} with lower bound > 0",
        )
    )
    brier_up = challenger["brier"] - champion["brier"]
    checks.append(
        Check(
            "guard_brier",
            brier_up <= settings.brier_tolerance,
            f"Brier {challenger['brier']:.4f} vs champion {champion['brier']:.4f} "
            f"(change {brier_up:+.4f}, tolerance +{settings.brier_tolerance:.4f})",
        )
    )
    recall_down = champion["recall_at_threshold"] - challenger["recall_at_threshold"]
    checks.append(
        Check(
            "guard_recall",
            recall_down <= settings.recall_tolerance,
            f"recall at threshold {challenger['recall_at_threshold']:.4f} vs champion "
            f"{champion['recall_at_threshold']:.4f} (drop {recall_down:+.4f}, "
            f"tolerance {settings.recall_tolerance:.4f})",
        )
    )
    losses = [s for s in evaluation.get("slices", []) if s.get("clear_loss")]
    if losses:
        named = ", ".join(
            f"{s['slice']} ({s['share']:.0%} of holdout: {s['difference']:+.4f}, "
            f"interval {_f(s['ci'][0])}..{_f(s['ci'][1])})"
            for s in losses
        )
        checks.append(Check("slices", False, f"clear {metric} loss on large slice(s): {named}"))
    else:
        checked = sum(1 for s in evaluation.get("slices", []) if s.get("evaluable"))
        checks.append(Check("slices", True, f"no clear loss on {checked} large slice(s)"))
    return GateDecision(all(c.passed for c in checks), tuple(checks))


def _gt(value: float | None, bound: float) -> bool:
    """value > bound, where a missing value (an undefined interval) never passes."""
    return value is not None and value == value and value > bound


def _f(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{value:.4f}"
