"""The learning study's statistics (benchmarks/learning_study_report.py): the confidence correlation and the paired
seed comparisons whose verdicts the README quotes."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from learning_study_report import compare, mean_within_group_spearman, skill, spearman_with_ci


def test_spearman_interval_separates_a_signal_from_noise() -> None:
    rng = np.random.default_rng(0)
    x = rng.random(192)
    signal = spearman_with_ci(x, x + 0.3 * rng.random(192), n_boot=300)
    assert signal["rho"] > 0.8 and signal["ci_low"] > 0.6 and signal["n"] == 192
    noise = spearman_with_ci(x, rng.random(192), n_boot=300)
    assert noise["ci_low"] < 0 < noise["ci_high"]


def test_within_seed_correlation_ignores_differences_between_models() -> None:
    """Two models, each with no signal inside, one worse overall: pooled values would show a strong correlation."""
    rng = np.random.default_rng(1)
    groups = [(rng.random(100) + offset, rng.random(100) + offset) for offset in (0.0, 5.0)]
    pooled = spearman_with_ci(np.concatenate([g[0] for g in groups]), np.concatenate([g[1] for g in groups]), 200)
    within = mean_within_group_spearman(groups, n_boot=200)
    assert pooled["rho"] > 0.5
    assert within["ci_low"] < 0 < within["ci_high"] and within["n"] == 200


def run(seed_mse: dict[str, float], seconds: dict[str, float]) -> dict:
    """One seed's evaluations at steps 0 and 2, with per-step training times."""
    evals = {m: [{"step": 0, "mse_normalized": 1.0}, {"step": 2, "mse_normalized": v}] for m, v in seed_mse.items()}
    trained = {"pi05_ki/flow": "pi05_ki", "pi05": "pi05"}
    return {"evals": evals, "train": {trained[m]: {"update_s": [seconds[m]] * 2} for m in seed_mse}}


def test_paired_comparison_verdicts_at_equal_steps_and_equal_time() -> None:
    # pi05_ki better at equal steps in every seed, but twice as slow per step: at pi05's time it is half trained
    runs = [run({"pi05_ki/flow": 0.2, "pi05": 0.3}, {"pi05_ki/flow": 2.0, "pi05": 1.0}) for _ in range(3)]
    result = compare(runs, "pi05_ki/flow", "pi05")
    assert result["equal_steps"]["verdict"] == "pi05_ki/flow at least as good in every seed"
    assert result["equal_time"]["verdict"] == "pi05_ki/flow worse in every seed"  # 0.6 at 2 s, against 0.3
    np.testing.assert_allclose(result["equal_time"]["mse_difference"]["mean"], 0.3)
    other = run({"pi05_ki/flow": 0.4, "pi05": 0.3}, {"pi05_ki/flow": 1.0, "pi05": 1.0})
    mixed = compare([runs[0], other], "pi05_ki/flow", "pi05")
    assert mixed["equal_steps"]["verdict"].startswith("mixed: pi05_ki/flow at least as good in 1 of 2 seeds")


def test_skill_is_relative_to_holding_still() -> None:
    assert skill(0.05, 0.1) == 0.5 and skill(0.2, 0.1) == -1.0 and np.isnan(skill(0.1, None))
