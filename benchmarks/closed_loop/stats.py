"""Success-rate statistics: Wilson 95% intervals per evaluation and the spread over training seeds."""

from __future__ import annotations

import statistics

from lerobot_fastplus.evaluation.closed_loop import wilson


def success_entry(successes: int, n: int) -> dict[str, float | int]:
    low, high = wilson(successes, n)
    return {"successes": successes, "n": n, "rate": successes / n if n else 0.0, "wilson95": [low, high]}


def over_seeds(rates: list[float]) -> dict[str, float | int]:
    """Mean, sample standard deviation (0 for one seed), min and max of per-seed success rates."""
    return {
        "seeds": len(rates),
        "mean": statistics.mean(rates),
        "std": statistics.stdev(rates) if len(rates) > 1 else 0.0,
        "min": min(rates),
        "max": max(rates),
    }
