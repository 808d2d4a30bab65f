"""The learning study's statistics (benchmarks/study/stats.py, tables.py, results.py): the confidence correlation,
the paired seed comparisons whose verdicts the README quotes, and the README tables written from the study's JSONs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from learning_study_readme import replace_block
from study.stats import HOLD, compare, mean_within_group_spearman, skill, spearman_with_ci, summarize
from study.tables import markdown_study_table


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


def study_result(mse: list[float], hold: float) -> dict:
    """A study of pi05 alone over len(mse) seeds, with its hold-current-state baseline."""
    final = {"latency_s": 0.02, "smoothness_normalized": 0.1, "mse_original": 0.0}
    evals = [[{"step": 0, **final, "mse_normalized": 1.0}, {"step": 2, **final, "mse_normalized": v}] for v in mse]
    runs = [{"evals": {"pi05": e}, "train": {"pi05": {"update_s_median": 0.3, "update_s": [0.3, 0.3]}}} for e in evals]
    baselines = {HOLD: {"mse_normalized": hold}}
    settings = {"name": None, "root": "so101_record_test", "steps": 2, "chunk_size": 50, "n_action_steps": 50,
                "normalization": "MIN_MAX", "relative_actions": False, "seeds": list(range(len(mse)))}  # fmt: skip
    return {"settings": settings, "runs": runs, "data": {"baselines": baselines},
            "summary": summarize(runs, ["pi05"], baselines), "comparisons": {}}  # fmt: skip


def test_readme_tables_show_mean_spread_and_skill_against_holding_still(tmp_path: Path) -> None:
    result = study_result([0.2, 0.3, 0.4], hold=0.5)
    table = markdown_study_table(result, "a.json", "a.png").splitlines()
    assert table[0].startswith("**so101_record_test** (2 steps, chunk 50, 50 steps scored, MIN_MAX, absolute actions)")
    assert "| pi05 | 0.300 ± 0.100 | 0.40 ± 0.20 | 0.300 ± 0.100 | - | - | 20 | 0.300 |" in table
    assert f"| baseline: {HOLD} | 0.500 | 0 | | | | | |" in table

    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- study tables -->\nold\n<!-- /study tables -->\n")
    with pytest.raises(ValueError, match="no '<!-- confidence table -->'"):
        replace_block(readme.read_text(), "confidence table", "new")
    assert replace_block(readme.read_text(), "study tables", "new") == (
        "intro\n<!-- study tables -->\nnew\n<!-- /study tables -->\n"
    )


def test_a_seed_run_later_merges_into_an_already_merged_study(tmp_path: Path) -> None:
    from study.results import merge_results

    def part(name: str, mse: list[float], seeds: list[int], machines: list[dict]) -> str:
        result = study_result(mse, hold=0.5)
        for run, seed in zip(result["runs"], seeds, strict=True):
            run.update(seed=seed, final={})
        result["settings"].update(seeds=seeds, threads=len(seeds), output_dir=str(tmp_path))
        result["data"]["eval_frames"] = [1, 2]
        result["methods"] = ["pi05"]
        result["machine"] = {**machines[0], "per_part": machines} if len(machines) > 1 else machines[0]
        path = tmp_path / name
        path.write_text(json.dumps(result))
        return str(path)

    committed = merge_results(
        [part("s0.json", [0.2], [0], [{"cpu": "a"}]), part("s1.json", [0.3], [1], [{"cpu": "b"}])]
    )
    (tmp_path / "committed.json").write_text(json.dumps(committed))
    merged = merge_results([str(tmp_path / "committed.json"), part("s2.json", [0.4], [2], [{"cpu": "c"}])])
    assert merged["settings"]["seeds"] == [0, 1, 2]
    assert merged["settings"]["merged_from"] == ["s0.json", "s1.json", "s2.json"]
    assert [m["cpu"] for m in merged["machine"]["per_part"]] == ["a", "b", "c"]
    np.testing.assert_allclose(merged["summary"]["pi05"]["mse_normalized"]["mean"], 0.3)
    with pytest.raises(ValueError, match="repeat"):
        merge_results([str(tmp_path / "committed.json"), part("again.json", [0.4], [1], [{"cpu": "d"}])])
