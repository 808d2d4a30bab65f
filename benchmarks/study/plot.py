"""The learning study's figure: learning curves, skill, losses, per-dimension errors, latency, tokens per chunk,
smoothness and the confidence scatter, all from its JSON."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from study.stats import HOLD

COLORS = {"pi05": "tab:blue", "pi05_ki/flow": "tab:green", "pi05_ki/fast": "tab:olive", "pi0_fast": "tab:red"}
LOSS_TERMS = {"pi05": [("loss", "pi05 flow")], "pi0_fast": [("ce_loss", "pi0_fast CE")],
              "pi05_ki": [("flow_loss", "pi05_ki flow"), ("fast_ce_loss", "pi05_ki CE")]}  # fmt: skip
LOSS_COLORS = {
    "pi05 flow": "tab:blue",
    "pi05_ki flow": "tab:green",
    "pi05_ki CE": "tab:olive",
    "pi0_fast CE": "tab:red",
}


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
