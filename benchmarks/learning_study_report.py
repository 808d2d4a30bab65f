"""Summaries, comparisons, the table and the plot of ``learning_study.py`` (everything computed from its JSON).

Numbers over seeds are means with the sample standard deviation and the range; "skill" is
``1 - MSE / MSE(hold the current state)``: above 0 beats holding still, 1 is perfect. Comparisons of two methods pair
the seeds (same initial weights, batches and noise) and state how many seeds favour each, so a verdict is only drawn
when every seed agrees.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

HOLD = "hold current state"
CENTRE = "range centre (normalised 0)"
COLORS = {"pi05": "tab:blue", "pi05_ki/flow": "tab:green", "pi05_ki/fast": "tab:olive", "pi0_fast": "tab:red"}
TRAINED_BY = {"pi05": "pi05", "pi05_ki/flow": "pi05_ki", "pi05_ki/fast": "pi05_ki", "pi0_fast": "pi0_fast"}
LOSS_TERMS = {"pi05": [("loss", "pi05 flow")], "pi0_fast": [("ce_loss", "pi0_fast CE")],
              "pi05_ki": [("flow_loss", "pi05_ki flow"), ("fast_ce_loss", "pi05_ki CE")]}  # fmt: skip
LOSS_COLORS = {
    "pi05 flow": "tab:blue",
    "pi05_ki flow": "tab:green",
    "pi05_ki CE": "tab:olive",
    "pi0_fast CE": "tab:red",
}


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


def fmt(cell: dict[str, float] | None, spec: str) -> str:
    if cell is None:
        return "-"
    return format(cell["mean"], spec) + (f"±{format(cell['std'], spec)}" if cell["std"] else "")


def format_table(result: dict) -> str:
    """Final evaluation per method (mean±std over seeds), the trivial baselines, comparisons, confidence signal."""
    summary, data, settings = result["summary"], result["data"], result["settings"]
    columns = [("MSE norm", "mse_normalized", ".3f"), ("skill", "skill", ".2f"), ("best", "best_mse_normalized", ".3f"),
               ("failed", "decode_failure_rate", ".0%"), ("tok/chunk", "tokens_per_chunk", ".0f"),
               ("latency s", "latency_s", ".3f"), ("step s", "train_step_s", ".3f")]  # fmt: skip
    width = 16
    seeds = result["settings"]["seeds"]
    lines = [
        f"held-out evaluation after {settings['steps']} steps, {len(data['eval_frames'])} frames, seeds {seeds} "
        "(mean±std over seeds; skill = 1 - MSE / MSE(hold current state))",
        f"{'method':<14}" + "".join(f"{title:>{width}}" for title, _, _ in columns),
    ]
    for method, row in summary.items():
        lines.append(f"{method:<14}" + "".join(f"{fmt(row.get(key), spec):>{width}}" for _, key, spec in columns))
    for name, baseline in data["baselines"].items():
        lines.append(f"baseline '{name}': MSE norm {baseline['mse_normalized']:.4f}")
    for name, comparison in result.get("comparisons", {}).items():
        for kind, row in comparison.items():
            d = row["mse_difference"]
            lines.append(
                f"{name}, {kind.replace('_', ' ')}: MSE difference {d['mean']:+.3f}±{d['std']:.3f} -> {row['verdict']}"
            )
    confidence = result.get("confidence")
    if confidence:
        pooled = confidence["mean_per_seed"]
        lines.append(
            f"AR-vs-flow disagreement vs flow error (pi05_ki, {pooled['n']} chunks; mean of per-seed Spearman): "
            f"{pooled['rho']:.2f} [{pooled['ci_low']:.2f}, {pooled['ci_high']:.2f}]; per seed "
            + ", ".join(f"{c['rho']:.2f} [{c['ci_low']:.2f}, {c['ci_high']:.2f}]" for c in confidence["per_seed"])
        )
    return "\n".join(lines)


def _curve(runs: list[dict], method: str, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    steps = np.array([e["step"] for e in runs[0]["evals"][method]])
    values = np.array([[e.get(key, np.nan) for e in run["evals"][method]] for run in runs], dtype=float)
    return steps, values.mean(axis=0), values.min(axis=0), values.max(axis=0)


def plot(result: dict, path: Path) -> None:
    """Learning curves (mean over seeds, band: min..max), baselines dashed, per-dimension errors, confidence."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs, baselines = result["runs"], result["data"]["baselines"]
    hold = baselines.get(HOLD, {}).get("mse_normalized")
    methods = result["methods"]
    fig, axes = plt.subplots(2, 4, figsize=(22, 9.5))
    (mse_ax, skill_ax, loss_ax, dim_ax), (lat_ax, tok_ax, conf_ax, smooth_ax) = axes

    for ax, key, title in ((mse_ax, "mse_normalized", "held-out MSE, normalised"),
                           (lat_ax, "latency_s", "latency per chunk, one observation (s)"),
                           (smooth_ax, "smoothness_normalized", "smoothness: mean sq. 2nd difference")):  # fmt: skip
        for method in methods:
            steps, mean, low, high = _curve(runs, method, key)
            ax.plot(steps, mean, "o-", ms=3, color=COLORS[method], label=method)
            ax.fill_between(steps, low, high, color=COLORS[method], alpha=0.2)
        ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
    for (name, b), style in zip(baselines.items(), ("--", "-."), strict=False):
        mse_ax.axhline(b["mse_normalized"], ls=style, color="grey", label=f"baseline: {name}")
    smooth_ax.axhline(result["data"]["gt_smoothness_normalized"], ls="--", color="k", label="recorded actions")

    if hold:
        for method in methods:
            steps, mean, low, high = _curve(runs, method, "mse_normalized")
            skill_ax.plot(steps, 1 - mean / hold, "o-", ms=3, color=COLORS[method], label=method)
            skill_ax.fill_between(steps, 1 - high / hold, 1 - low / hold, color=COLORS[method], alpha=0.2)
        skill_ax.axhline(0, color="grey", ls="--", label="hold current state")
        skill_ax.set_ylim(max(-3.0, skill_ax.get_ylim()[0]), 1.0)
    skill_ax.set_title("skill = 1 - MSE / MSE(hold); > 0 beats holding still", fontsize=10)

    for trained, terms in LOSS_TERMS.items():
        for term, label in terms if trained in runs[0]["train"] else []:
            values = np.array([[s[term] for s in run["train"][trained]["losses"]] for run in runs]).mean(axis=0)
            width = min(20, len(values))
            smooth = np.convolve(values, np.ones(width) / width, mode="valid")
            loss_ax.plot(np.arange(len(smooth)) + width, smooth, color=LOSS_COLORS[label], label=label)
    loss_ax.set_yscale("log")
    loss_ax.set_title("training loss (mean over seeds, running mean over 20 steps)", fontsize=10)

    per_dim = result["data"].get("per_dim_hold_mse")
    if per_dim:
        hold_dims = np.array(per_dim)
        for method in methods:
            dims = np.mean([run["final"]["per_dim_mse"][method] for run in runs], axis=0)
            dim_ax.scatter(hold_dims, dims, s=14, color=COLORS[method], label=method)
        line = [hold_dims.min() * 0.8, hold_dims.max() * 1.2]
        dim_ax.plot(line, line, "k--", lw=1, label="= hold current state")
        dim_ax.set_xscale("log")
        dim_ax.set_yscale("log")
        dim_ax.set_xlabel("how far the dimension moves: MSE of holding it (normalised)")
        dim_ax.set_ylabel("policy MSE of the dimension")
    dim_ax.set_title("per action dimension, final evaluation (below the line: beats holding)", fontsize=10)

    for method in methods:
        if "tokens_per_chunk" in runs[0]["evals"][method][0]:
            steps, mean, low, high = _curve(runs, method, "tokens_per_chunk")
            failed = _curve(runs, method, "decode_failure_rate")[1].max()
            tok_ax.plot(steps, mean, "o-", ms=3, color=COLORS[method], label=f"{method} (max failed {failed:.0%})")
            tok_ax.fill_between(steps, low, high, color=COLORS[method], alpha=0.2)
    tok_ax.set_title("autoregressive: generated tokens per chunk", fontsize=10)

    confidence = result.get("confidence")
    if confidence:
        for seed_index, run in enumerate(runs):
            c = run["final"]["confidence"]
            conf_ax.scatter(
                c["disagreement"],
                c["flow_error"],
                s=10,
                alpha=0.6,
                label=f"seed {result['settings']['seeds'][seed_index]}",
            )
        pooled = confidence["mean_per_seed"]
        conf_ax.set_xscale("log")
        conf_ax.set_yscale("log")
        conf_ax.set_xlabel("disagreement: MSE between the FAST-head and flow chunks")
        conf_ax.set_ylabel("flow chunk's MSE against the recording")
        interval = f"[{pooled['ci_low']:.2f}, {pooled['ci_high']:.2f}]"
        conf_ax.set_title(f"pi05_ki confidence: mean per-seed Spearman {pooled['rho']:.2f} {interval}", fontsize=10)
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        if ax not in (dim_ax, conf_ax):
            ax.set_xlabel(ax.get_xlabel() or "optimizer step")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    s, m = result["settings"], result["machine"]
    fig.suptitle(
        f"{Path(s['root']).name}{' (image-free)' if s['image_free'] else ''}: {s['paligemma_variant']} backbone, "
        f"{s['action_expert_variant']} expert, {s['resolved_image_size']}px, chunk {s['chunk_size']}, split "
        f"{s['split_every']}, batch {s['batch_size']}, lr {s['lr']:g}, {s['normalization']}"
        f"{', relative actions' if s.get('relative_actions') else ''}, seeds {s['seeds']}; "
        f"{m['gpu'] or m['cpu']}, {m['torch_threads']} threads",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _number(value: float) -> str:
    return f"{value:.3f}" if value == 0 or abs(value) >= 0.01 else f"{value:.1e}"


def _cell(cell: dict[str, float] | None, render: Any = _number) -> str:
    return "-" if cell is None else f"{render(cell['mean'])} ± {render(cell['std'])}"


def dataset_label(result: dict) -> str:
    settings = result["settings"]
    return settings.get("name") or settings["root"]


def markdown_study_table(result: dict, json_link: str, png_link: str) -> str:
    """One dataset's final evaluation as a markdown table (mean ± std over seeds) under a line naming its settings."""
    s, summary = result["settings"], result["summary"]
    actions = "relative" if s["relative_actions"] else "absolute"
    lines = [
        f"**{dataset_label(result)}** ({s['steps']} steps, chunk {s['chunk_size']}, {s['n_action_steps']} steps "
        f"scored, {s['normalization']}, {actions} actions), seeds {s['seeds']} ([plot]({png_link}), "
        f"[JSON]({json_link})):",
        "",
        "| method | held-out MSE | skill | best MSE | failed chunks | tokens/chunk | ms/chunk | s/step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method, row in summary.items():
        failed, tokens = row.get("decode_failure_rate"), row.get("tokens_per_chunk")
        lines.append(
            f"| {method} | {_cell(row['mse_normalized'])} | {_cell(row['skill'], lambda v: f'{v:.2f}')} "
            f"| {_cell(row['best_mse_normalized'])} | {'-' if failed is None else format(failed['mean'], '.0%')} "
            f"| {'-' if tokens is None else format(tokens['mean'], '.0f')} | {row['latency_s']['mean'] * 1000:.0f} "
            f"| {row['train_step_s']['mean']:.3f} |"
        )
    for name, baseline in result["data"]["baselines"].items():
        lines.append(f"| baseline: {name} | {_number(baseline['mse_normalized'])} | {'0' if name == HOLD else ''} "
                     "| | | | | |")  # fmt: skip
    return "\n".join(lines)


def markdown_comparisons(results: list[dict]) -> str:
    """The paired per-seed comparisons of several studies as one markdown table."""
    lines = ["| dataset (seeds) | comparison | equal steps | equal time |", "|---|---|---|---|"]
    for result in results:
        for name, row in result["comparisons"].items():
            cells = [f"{row[k]['mse_difference']['mean']:+.3f} ± {row[k]['mse_difference']['std']:.3f}: "
                     f"{row[k]['verdict']}" for k in ("equal_steps", "equal_time")]  # fmt: skip
            lines.append(f"| {dataset_label(result)} ({len(result['runs'])}) | {name} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def markdown_confidence(results: list[dict]) -> str:
    """The AR-vs-flow disagreement's correlation with the flow error, per study, as a markdown table."""
    lines = ["| dataset | chunks | mean per-seed rho [95% CI] | per seed |", "|---|---|---|---|"]
    for result in results:
        confidence = result.get("confidence")
        if not confidence:
            continue
        per_seed, mean = confidence["per_seed"], confidence["mean_per_seed"]
        interval = lambda c: f"{c['rho']:.2f} [{c['ci_low']:.2f}, {c['ci_high']:.2f}]"  # noqa: E731
        lines.append(f"| {dataset_label(result)} | {len(per_seed)} x {per_seed[0]['n']} | {interval(mean)} "
                     f"| {', '.join(interval(c) for c in per_seed)} |")  # fmt: skip
    return "\n".join(lines)
