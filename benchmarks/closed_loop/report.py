"""The closed-loop study's outputs: a markdown table and a plot of success against training steps."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

BASELINE_LABELS = {
    "expert": "scripted expert",
    "hold": "do nothing (hold)",
    "random": "random actions",
    "mean": "dataset mean action",
}


def _rate(entry: dict) -> str:
    low, high = entry["wilson95"]
    return f"{entry['rate']:.2f} [{low:.2f}, {high:.2f}] ({entry['successes']}/{entry['n']})"


def _best(result: dict) -> dict[int, tuple[float, int]]:
    best: dict[int, tuple[float, int]] = {}
    for step, cells in result["per_step"].items():
        for cell in cells:
            if cell["seed"] not in best or cell["rate"] > best[cell["seed"]][0]:
                best[cell["seed"]] = (cell["rate"], int(step))
    return best


def markdown_table(study: dict) -> str:
    """One row per policy at its last checkpoint (per seed, then mean and spread, each seed's best checkpoint:
    chosen on the evaluation episodes themselves, so optimistic, and the median latency per chunk), then the
    baselines."""
    lines = [
        "| policy | steps | train wall time | success (Wilson 95%) per seed | mean over seeds (std) | best checkpoint "
        "per seed | eval s/episode | ms per chunk |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, result in study.get("policies", {}).items():
        last = max(int(step) for step in result["per_step"])
        cells = result["per_step"][str(last)]
        per_seed = "; ".join(f"s{c['seed']}: {_rate(c)}" for c in cells)
        minutes = [c["train_s"] / 60 for c in cells if c.get("train_s") is not None]
        wall = f"{min(minutes):.0f}-{max(minutes):.0f} min" if minutes else "n/a"
        spread = result["final_over_seeds"]
        per_episode = sum(c["eval_s"] for c in cells) / sum(c["n"] for c in cells)
        over = f"{spread['mean']:.2f} ({spread['std']:.2f})"
        best = "; ".join(f"s{seed}: {rate:.2f} @ {step}" for seed, (rate, step) in sorted(_best(result).items()))
        timing = study.get("latency", {}).get(label)
        latency = f"{timing['ms_median']:.0f}" if timing else "n/a"
        lines.append(f"| {label} | {last} | {wall} | {per_seed} | {over} | {best} | {per_episode:.2f} | {latency} |")
    for kind, entry in study.get("baselines", {}).items():
        lines.append(
            f"| {BASELINE_LABELS[kind]} | - | - | {_rate(entry)} | - | - | {entry['eval_s'] / entry['n']:.2f} | - |"
        )
    return "\n".join(lines)


def plot(study: dict, path: Path) -> Path:
    """Mean success over seeds against training steps (line), each seed's rate (dots), baselines (grey lines)."""
    fig, ax = plt.subplots(figsize=(10, 5))
    colours = plt.get_cmap("tab20").colors  # one colour per label: the study has more than ten
    for index, (label, result) in enumerate(study.get("policies", {}).items()):
        colour = colours[index % len(colours)]
        steps = sorted(int(s) for s in result["per_step"])
        means = [
            sum(c["rate"] for c in result["per_step"][str(step)]) / len(result["per_step"][str(step)]) for step in steps
        ]
        ax.plot(steps, means, color=colour, marker="o", label=label)
        for step in steps:
            rates = [c["rate"] for c in result["per_step"][str(step)]]
            ax.scatter([step] * len(rates), rates, color=colour, s=12, alpha=0.6)
    styles = {"expert": ":", "hold": "--", "random": "-.", "mean": (0, (1, 3))}
    for kind, entry in study.get("baselines", {}).items():
        ax.axhline(entry["rate"], color="grey", linestyle=styles[kind], linewidth=1, label=BASELINE_LABELS[kind])
    ax.set_xlabel("training steps")
    ax.set_ylabel("success rate (50 episodes per point)")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(f"so101_sim {study['settings']['task']}: lerobot-eval success; line = mean over seeds, dots = seeds")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
