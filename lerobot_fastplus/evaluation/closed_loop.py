"""Closed-loop success rates as ``lerobot-eval`` writes them, with a Wilson 95% interval, and the verdict of a
trained policy against the blind baselines (do nothing, random, mean action)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from scipy.stats import binomtest


def wilson(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a success rate (well behaved at 0 and n, unlike the normal approximation)."""
    if n == 0:
        return 0.0, 1.0
    interval = binomtest(successes, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(interval.low), float(interval.high)


@dataclass(frozen=True)
class SuccessRate:
    """One ``lerobot-eval`` run: ``successes`` of ``n`` episodes, in ``eval_s`` seconds."""

    label: str
    successes: int
    n: int
    eval_s: float = 0.0

    @property
    def rate(self) -> float:
        return self.successes / self.n if self.n else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.successes, self.n)

    def row(self, width: int = 32) -> str:
        low, high = self.interval
        return f"  {self.label:<{width}} {self.successes:>3}/{self.n:<3}  {self.rate:.2f}  [{low:.2f}, {high:.2f}]"

    def to_dict(self) -> dict[str, object]:
        return {
            "label": self.label,
            "successes": self.successes,
            "n": self.n,
            "rate": self.rate,
            "wilson95": list(self.interval),
            "eval_s": self.eval_s,
        }


def read_eval_info(directory: str | Path, label: str) -> SuccessRate:
    """The overall success of the ``lerobot-eval`` run whose ``--output_dir`` was ``directory``."""
    overall = json.loads((Path(directory) / "eval_info.json").read_text())["overall"]
    n = int(overall["n_episodes"])
    return SuccessRate(label, round(overall["pc_success"] * n / 100), n, float(overall.get("eval_s", 0.0)))


def verdict(policy: SuccessRate, blind: list[SuccessRate], bar: float) -> tuple[bool, str]:
    """Whether ``policy`` learned the task: a success rate of at least ``bar`` whose interval lies above the interval
    of every blind baseline; and one sentence saying so, or saying what is missing."""
    best = max(blind, key=lambda b: b.interval[1])
    low = policy.interval[0]
    if policy.rate >= bar and low > best.interval[1]:
        return True, (
            f"PASS: {policy.label} succeeds in {policy.rate:.0%} of the episodes (bar {bar:.0%}); its interval lies "
            f"above every blind baseline's (best: {best.label}, at most {best.interval[1]:.0%})."
        )
    reasons = []
    if policy.rate < bar:
        reasons.append(f"success {policy.rate:.0%} is below the bar of {bar:.0%}")
    if low <= best.interval[1]:
        reasons.append(f"its interval overlaps {best.label}'s")
    return False, f"BELOW THE BAR: {policy.label}: {' and '.join(reasons)}."
