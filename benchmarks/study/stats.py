"""The learning study's statistics over seeds, computed from its JSON: spreads, skill against holding still, paired
seed comparisons and Spearman correlations with bootstrap intervals.

Numbers over seeds are means with the sample standard deviation and the range; "skill" is
``1 - MSE / MSE(hold the current state)``: above 0 beats holding still, 1 is perfect. Comparisons of two methods pair
the seeds (same initial weights, batches and noise) and state how many seeds favour each, so a verdict is only drawn
when every seed agrees.
"""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np
from scipy.stats import spearmanr

HOLD = "hold current state"
CENTRE = "range centre (normalised 0)"
TRAINED_BY = {"pi05": "pi05", "pi05_ki/flow": "pi05_ki", "pi05_ki/fast": "pi05_ki", "pi0_fast": "pi0_fast"}


def spread(values: list[float]) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one value), min and max."""
    return {
        "mean": statistics.mean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def skill(mse: float, hold_mse: float | None) -> float:
    return float("nan") if not hold_mse else 1.0 - mse / hold_mse


def spearman_with_ci(x: np.ndarray, y: np.ndarray, n_boot: int = 2000, seed: int = 0) -> dict[str, float]:
    """Spearman's rank correlation of paired samples with a percentile bootstrap 95% interval (pairs resampled)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    rho = float(spearmanr(x, y).statistic)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(x), size=(n_boot, len(x)))
    boots = np.array([spearmanr(x[d], y[d]).statistic for d in draws], dtype=float)
    low, high = np.nanpercentile(boots, [2.5, 97.5])
    return {"rho": rho, "ci_low": float(low), "ci_high": float(high), "n": len(x)}


def mean_within_group_spearman(groups: list[tuple[np.ndarray, np.ndarray]], n_boot: int = 2000, seed: int = 0) -> dict:
    """The mean over groups (seeds: one trained model each) of Spearman's rho within each group, with a bootstrap 95%
    interval that resamples pairs within each group. Pooling raw values across models would count differences
    between the models (one is worse overall, and disagrees more) as evidence for the signal."""
    groups = [(np.asarray(x, dtype=float), np.asarray(y, dtype=float)) for x, y in groups]
    rho = float(np.mean([spearmanr(x, y).statistic for x, y in groups]))
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        draws = [rng.integers(0, len(x), size=len(x)) for x, _ in groups]
        boots.append(np.mean([spearmanr(x[d], y[d]).statistic for (x, y), d in zip(groups, draws, strict=True)]))
    low, high = np.nanpercentile(boots, [2.5, 97.5])
    return {"rho": rho, "ci_low": float(low), "ci_high": float(high), "n": sum(len(x) for x, _ in groups)}


def summarize(runs: list[dict], methods: list[str], baselines: dict) -> dict[str, dict[str, Any]]:
    """Per method, over seeds: the final evaluation's MSE and skill, the best MSE, timings and decode counts."""
    hold = baselines.get(HOLD, {}).get("mse_normalized")
    out = {}
    for method in methods:
        trained = TRAINED_BY[method]
        finals = [run["evals"][method][-1] for run in runs]
        row: dict[str, Any] = {"seeds": len(runs)}
        for key in ("mse_normalized", "mse_original", "latency_s", "smoothness_normalized"):
            row[key] = spread([f[key] for f in finals])
        row["skill"] = spread([skill(f["mse_normalized"], hold) for f in finals])
        row["best_mse_normalized"] = spread([min(e["mse_normalized"] for e in run["evals"][method]) for run in runs])
        for key in ("decode_failure_rate", "tokens_per_chunk"):
            if key in finals[0]:
                row[key] = spread([f[key] for f in finals])
        row["train_step_s"] = spread([run["train"][trained]["update_s_median"] for run in runs])
        out[method] = row
    return out


def value_at_time(run: dict, method: str, seconds: float) -> float:
    """The method's held-out MSE after ``seconds`` of its own training time (linear between evaluations)."""
    trained = TRAINED_BY[method]
    elapsed = np.concatenate([[0.0], np.cumsum(run["train"][trained]["update_s"])])
    evals = run["evals"][method]
    times = [elapsed[e["step"]] for e in evals]
    return float(np.interp(seconds, times, [e["mse_normalized"] for e in evals]))


def compare(runs: list[dict], method: str, baseline: str) -> dict[str, Any] | None:
    """``method`` against ``baseline`` seed by seed: at equal optimizer steps (final evaluations) and at equal
    training time (``method`` given the time ``baseline`` took for all its steps). Negative differences favour
    ``method``."""
    if any(method not in run["evals"] or baseline not in run["evals"] for run in runs):
        return None
    out: dict[str, Any] = {}
    for kind in ("equal_steps", "equal_time"):
        diffs = []
        for run in runs:
            base = run["evals"][baseline][-1]["mse_normalized"]
            if kind == "equal_steps":
                ours = run["evals"][method][-1]["mse_normalized"]
            else:
                budget = float(np.sum(run["train"][TRAINED_BY[baseline]]["update_s"]))
                ours = value_at_time(run, method, budget)
            diffs.append(ours - base)
        better = sum(d <= 0 for d in diffs)
        verdict = (
            f"{method} at least as good in every seed" if better == len(diffs)
            else f"{method} worse in every seed" if better == 0
            else f"mixed: {method} at least as good in {better} of {len(diffs)} seeds (not distinguishable)"
        )  # fmt: skip
        out[kind] = {"mse_difference": spread(diffs), "seeds_at_least_as_good": better, "verdict": verdict}
    return out
