"""The learning study's results as text: the table it prints, and the markdown tables the README quotes
(``learning_study_readme.py`` writes them)."""

from __future__ import annotations

from typing import Any

from study.stats import HOLD


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
