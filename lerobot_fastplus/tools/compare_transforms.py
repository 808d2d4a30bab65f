"""fastplus-compare-transforms: rate-distortion of FAST's DCT against wavelets and no transform, on your dataset.

For every transform and every ``scale`` of a sweep, a FAST tokenizer is fitted on the chunks of most episodes and
measured on held-out episodes (coefficients outside the fitted range are clipped and counted). Example::

    fastplus-compare-transforms --root=/data/so101_record_test --horizon=10 --output_dir=outputs/compare_so101

writes ``rate_distortion.png`` (tokens per chunk against reconstruction MSE, one curve per transform) and
``rate_distortion.json``, and prints a table at one MSE (default: the MSE the DCT reaches at scale 10, FAST's
default): tokens per chunk interpolated on each transform's curve, and, for a tokenizer fitted at the scale
interpolated for that MSE, its measured tokens and MSE, vocabulary use, most frequent id and encode / decode speed,
plus the fewest tokens any fitted tokenizer of that transform needed without exceeding the MSE. BPE token counts
can jump between neighbouring scales (which pre-tokenizer character class the codes fall in changes the merges);
where the interpolated and the measured tokens differ much, sweep more scales and trust the last column.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lerobot_fastplus.data.chunk_source import ChunkSourceConfig
from lerobot_fastplus.fast import FastTokenizer
from lerobot_fastplus.fast.transforms import DCT, check_transform
from lerobot_fastplus.tools.cli import print_range, run_cli

if TYPE_CHECKING:
    from lerobot_fastplus.data.chunks import ActionChunks

DEFAULT_TRANSFORMS = ("dct", "haar", "db2", "db4", "none")
DEFAULT_SCALES = (5.0, 7.0, 10.0, 14.0, 20.0, 28.0)
FAST_DEFAULT_SCALE = 10.0
# Encode / decode speed is the best of this many passes over the evaluation chunks (other load only slows a pass).
TIMING_REPEATS = 3


@dataclass
class CompareTransformsConfig(ChunkSourceConfig):
    # Transforms to compare: dct, none, or orthogonal PyWavelets wavelets (haar, db2, db4, sym4, coif1, ...).
    transforms: list[str] = field(default_factory=lambda: list(DEFAULT_TRANSFORMS))
    # Scales swept for every transform (coefficients are multiplied by the scale before rounding).
    scales: list[float] = field(default_factory=lambda: list(DEFAULT_SCALES))
    # BPE vocabulary size of every fitted tokenizer.
    vocab_size: int = 1024
    # MSE (normalised units) of the table (default: what dct reaches at scale 10, FAST's default).
    target_mse: float | None = None
    # Share of episodes (the last ones) held out to measure on; 0 measures on the fitting chunks.
    holdout: float = 0.25
    # Keep at most this many chunks (seeded random subsample, before the split) to bound the fitting time.
    max_chunks: int | None = 2000
    # Where rate_distortion.json / .png go (default: outputs/fastplus_compare/<dataset>_h<horizon>).
    output_dir: str | None = None

    def validate(self) -> None:
        super().validate()
        if self.chunk_size is not None:
            raise ValueError("--chunk_size/--split_every have no meaning here; compare one --horizon at a time.")
        if not self.transforms or not self.scales:
            raise ValueError("--transforms and --scales must each list at least one value.")
        self.transforms = [check_transform(name) for name in self.transforms]
        if len(set(self.transforms)) != len(self.transforms):
            raise ValueError(f"--transforms lists a transform twice: {self.transforms}.")
        if min(self.scales) <= 0 or self.vocab_size <= 0:
            raise ValueError(f"--scales ({self.scales}) and --vocab_size ({self.vocab_size}) must be positive.")
        if self.target_mse is None and DCT not in self.transforms:
            raise ValueError("without dct in --transforms there is no default MSE: pass --target_mse=<value>.")
        if self.target_mse is not None and not self.target_mse > 0:
            raise ValueError(f"--target_mse must be positive, got {self.target_mse}.")
        if not 0 <= self.holdout < 1:
            raise ValueError(f"--holdout is a share of episodes in [0, 1), got {self.holdout}.")


@dataclass(frozen=True)
class Point:
    """One tokenizer (transform, scale) measured on the evaluation chunks; ``error`` says why a fit failed.

    MSE and errors are in normalised units; the speeds are the best of ``TIMING_REPEATS`` passes."""

    transform: str
    scale: float
    tokens_per_chunk: float | None = None
    tokens_p95: float | None = None
    mse: float | None = None
    max_abs_error: float | None = None
    clipped_share: float | None = None
    vocab_utilisation: float | None = None
    top_token_share: float | None = None
    encode_chunks_per_s: float | None = None
    decode_chunks_per_s: float | None = None
    fit_seconds: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class AtTarget:
    """A transform at the table's MSE: tokens interpolated on its curve, a tokenizer fitted at the interpolated
    scale, and the fitted tokenizer with the fewest tokens among those that reach the MSE (robust where BPE makes
    the curve jagged)."""

    transform: str
    tokens_per_chunk: float | None
    vs_dct: float | None
    scale: float | None
    measured: Point | None
    fewest_within_target: Point | None


def split_by_episode(chunks: ActionChunks, holdout: float) -> tuple[ActionChunks, ActionChunks]:
    """(fitting chunks, evaluation chunks): the last ``ceil(holdout * episodes)`` episodes are held out."""
    if holdout == 0:
        return chunks, chunks
    episodes = np.unique(chunks.episode_index)
    n_held = math.ceil(holdout * len(episodes))
    if n_held >= len(episodes):
        raise ValueError(
            f"--holdout={holdout} leaves no episode to fit on ({len(episodes)} episode(s)); lower it, or pass "
            "--holdout=0 to measure on the fitting chunks."
        )
    held = np.isin(chunks.episode_index, episodes[-n_held:])
    return _subset(chunks, ~held), _subset(chunks, held)


def _subset(chunks: ActionChunks, keep: np.ndarray) -> ActionChunks:
    return replace(
        chunks,
        raw=chunks.raw[keep],
        normalized=chunks.normalized[keep],
        episode_index=chunks.episode_index[keep],
        start_frame=chunks.start_frame[keep],
    )


def measure(transform: str, scale: float, fit: ActionChunks, evaluate: ActionChunks, vocab_size: int) -> Point:
    """Fit on ``fit``, encode (clipping) and decode ``evaluate``; a fit that fails becomes a Point with its error."""
    from lerobot_fastplus.evaluation.tokenizer_report import compute_report

    start = time.perf_counter()
    try:
        tokenizer = FastTokenizer.fit(fit.normalized, scale=scale, vocab_size=vocab_size, transform=transform)
    except ValueError as err:
        return Point(transform, scale, error=str(err))
    fit_seconds = time.perf_counter() - start
    report = compute_report(tokenizer, evaluate, clip=True)
    errors = report.errors
    encode_s, decode_s = _best_times(tokenizer, evaluate.normalized)
    return Point(
        transform,
        scale,
        tokens_per_chunk=report.tokens_per_chunk.mean,
        tokens_p95=report.tokens_per_chunk.p95,
        mse=None if errors is None else errors.mse_normalized,
        max_abs_error=None if errors is None else errors.max_abs_normalized,
        clipped_share=report.clipped_share,
        vocab_utilisation=report.vocab_utilisation,
        top_token_share=report.top_token_share,
        encode_chunks_per_s=len(evaluate.raw) / encode_s,
        decode_chunks_per_s=len(evaluate.raw) / decode_s,
        fit_seconds=fit_seconds,
    )


def _best_times(tokenizer: FastTokenizer, chunks: np.ndarray) -> tuple[float, float]:
    """Seconds for the fastest of ``TIMING_REPEATS`` batched encodes and decodes of ``chunks``."""
    encode_s = decode_s = math.inf
    for _ in range(TIMING_REPEATS):
        start = time.perf_counter()
        ids = tokenizer.encode(chunks, clip=True)
        middle = time.perf_counter()
        tokenizer.decode(ids, time_horizon=chunks.shape[1], action_dim=chunks.shape[2])
        encode_s, decode_s = min(encode_s, middle - start), min(decode_s, time.perf_counter() - middle)
    return max(encode_s, 1e-9), max(decode_s, 1e-9)


def interpolate_at_mse(points: Sequence[Point], target: float) -> tuple[float, float] | None:
    """(tokens per chunk, scale) at ``target`` MSE, linear in log MSE between the two nearest points of one
    transform's curve (log scale too); None when the curve does not reach ``target``."""
    curve = sorted((p for p in points if p.mse), key=lambda p: p.mse)
    if not curve or not curve[0].mse <= target <= curve[-1].mse:
        return None
    log_mse = np.log([p.mse for p in curve])
    tokens = np.interp(math.log(target), log_mse, [p.tokens_per_chunk for p in curve])
    log_scale = np.interp(math.log(target), log_mse, np.log([p.scale for p in curve]))
    return float(tokens), float(math.exp(log_scale))


def compare(cfg: CompareTransformsConfig) -> dict[str, Any]:
    """Load the dataset's chunks, compare, write the JSON and the plot; returns the JSON content."""
    from lerobot_fastplus.data.chunks import load_action_chunks, open_dataset

    cfg.validate()
    root = cfg.dataset_root()
    dataset = open_dataset(root, cfg.dataset_repo_id(), cfg.episodes)
    chunks = load_action_chunks(
        dataset, cfg.horizon, mode=cfg.normalization_mode, stride=cfg.stride, max_chunks=cfg.max_chunks, seed=cfg.seed
    )
    print_range(chunks)
    result = compare_chunks(chunks, cfg, root.name)
    output_dir = Path(cfg.output_dir or Path("outputs") / "fastplus_compare" / f"{root.name}_h{cfg.horizon}")
    write_comparison(result, output_dir)
    return result


def compare_chunks(chunks: ActionChunks, cfg: CompareTransformsConfig, dataset_name: str) -> dict[str, Any]:
    """Sweep every transform over ``cfg.scales`` on ``chunks`` (any normalised chunks, e.g. relative actions) and
    interpolate at the target MSE; returns the JSON content (``cfg``'s data-source fields are only recorded)."""
    fit, evaluate = split_by_episode(chunks, cfg.holdout)
    print(
        f"fitting on {len(fit.raw)} chunks of episodes {_episode_list(fit)}, measuring on {len(evaluate.raw)} "
        f"chunks of episodes {_episode_list(evaluate)}"
    )

    def run(transform: str, scale: float) -> Point:
        point = measure(transform, scale, fit, evaluate, cfg.vocab_size)
        print(_point_line(point), flush=True)
        return point

    curves = {name: [run(name, scale) for scale in sorted(cfg.scales)] for name in cfg.transforms}
    target, target_source = cfg.target_mse, "--target_mse"
    if target is None:
        reference = next((p for p in curves[DCT] if p.scale == FAST_DEFAULT_SCALE), None)
        if reference is None:
            reference = run(DCT, FAST_DEFAULT_SCALE)
            curves[DCT] = sorted([*curves[DCT], reference], key=lambda p: p.scale)
        if reference.mse is None:
            raise ValueError(f"dct at scale 10 could not be fitted ({reference.error}); pass --target_mse=<value>.")
        target, target_source = reference.mse, "MSE of dct at scale 10 (FAST's default)"

    rows = []
    for name, points in curves.items():
        found = interpolate_at_mse(points, target)
        tokens, scale, measured = None, None, None
        if found is not None:
            tokens, scale = found
            swept = next((p for p in points if math.isclose(p.scale, scale, rel_tol=1e-9)), None)
            measured = swept or run(name, round(scale, 3))
        within = [p for p in [*points, measured] if p is not None and p.mse is not None and p.mse <= target]
        fewest = min(within, key=lambda p: p.tokens_per_chunk, default=None)
        rows.append(AtTarget(name, tokens, None, scale, measured, fewest))
    dct_tokens = next((r.tokens_per_chunk for r in rows if r.transform == DCT), None)
    if dct_tokens:
        rows = [replace(r, vs_dct=r.tokens_per_chunk / dct_tokens) if r.tokens_per_chunk else r for r in rows]

    result = {
        "tool": "fastplus-compare-transforms",
        "dataset": dataset_name,
        "repo_id": chunks.repo_id,
        "normalization_mode": chunks.mode.value,
        "horizon": chunks.horizon,
        "action_dim": chunks.action_dim,
        "vocab_size": cfg.vocab_size,
        "fit_chunks": len(fit.raw),
        "eval_chunks": len(evaluate.raw),
        "fit_episodes": _episode_list(fit),
        "eval_episodes": _episode_list(evaluate),
        "target_mse": target,
        "target_mse_source": target_source,
        "at_target": [asdict(r) for r in rows],
        "points": [asdict(p) for points in curves.values() for p in points],
        # the dataset is named above; its location and the output folder are this machine's business
        "config": {k: v for k, v in asdict(cfg).items() if k not in ("root", "output_dir")},
    }
    return result


def write_comparison(result: dict[str, Any], output_dir: Path) -> tuple[Path, Path]:
    """``rate_distortion.json`` and ``rate_distortion.png`` in ``output_dir``; prints the table."""
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path = output_dir / "rate_distortion.json"
    json_path.write_text(json.dumps(result, indent=2))
    png_path = plot_rate_distortion(result, output_dir / "rate_distortion.png")
    print(format_table(result))
    print(f"rate_distortion.json: {json_path}\nrate_distortion.png:  {png_path}")
    return json_path, png_path


def _episode_list(chunks: ActionChunks) -> list[int]:
    return [int(e) for e in np.unique(chunks.episode_index)]


def _point_line(p: Point) -> str:
    if p.error is not None:
        return f"  {p.transform:>6} scale {p.scale:>6g}: not fitted ({p.error.split('. ')[0]})"
    return (
        f"  {p.transform:>6} scale {p.scale:>6g}: {p.tokens_per_chunk:7.2f} tokens/chunk, MSE {p.mse:.3e}, "
        f"clipped {p.clipped_share:.3%}, fit {p.fit_seconds:.1f} s"
    )


def format_table(result: dict[str, Any]) -> str:
    """The table at the target MSE, as Markdown."""
    head = (
        f"{result['dataset']}, horizon {result['horizon']}, {result['action_dim']}-D, {result['normalization_mode']}, "
        f"vocab {result['vocab_size']}: at MSE {result['target_mse']:.3e} ({result['target_mse_source']})"
    )
    lines = [
        head,
        "",
        "| transform | tokens/chunk (interpolated) | vs dct | scale | measured tokens / MSE | fewest tokens at "
        "MSE <= target (scale) | ids used | top id | encode / decode chunks/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["at_target"]:
        m, fewest = row["measured"], row["fewest_within_target"]
        best = "none" if fewest is None else f"{fewest['tokens_per_chunk']:.2f} ({fewest['scale']:g})"
        if row["tokens_per_chunk"] is None or m is None or m["mse"] is None:
            lines.append(f"| {row['transform']} | not reached by the sweep | | | | {best} | | | |")
            continue
        ratio = "" if row["vs_dct"] is None else f"{row['vs_dct']:.2f}x"
        lines.append(
            f"| {row['transform']} | {row['tokens_per_chunk']:.2f} | {ratio} | {row['scale']:.2f} "
            f"| {m['tokens_per_chunk']:.2f} / {m['mse']:.3e} | {best} | {m['vocab_utilisation']:.1%} "
            f"| {m['top_token_share']:.1%} | {m['encode_chunks_per_s']:,.0f} / {m['decode_chunks_per_s']:,.0f} |"
        )
    return "\n".join(lines)


def plot_rate_distortion(result: dict[str, Any], path: Path) -> Path:
    """Tokens per chunk against MSE, one curve per transform, the table's MSE as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    for colour, row in enumerate(result["at_target"]):
        name = row["transform"]
        points = [p for p in result["points"] if p["transform"] == name and p["mse"]]
        c = f"C{colour}"
        ax.plot([p["mse"] for p in points], [p["tokens_per_chunk"] for p in points], "-o", color=c, label=name)
        for p in points:
            xy = (p["mse"], p["tokens_per_chunk"])
            ax.annotate(f"{p['scale']:g}", xy, fontsize=7, color=c, textcoords="offset points", xytext=(3, 3))
        if row["tokens_per_chunk"] is not None:
            ax.plot([result["target_mse"]], [row["tokens_per_chunk"]], "*", color=c, markersize=11)
    ax.axvline(result["target_mse"], color="grey", linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel("reconstruction MSE (normalised units, held-out chunks); labels: scale")
    ax.set_ylabel("tokens per chunk (mean)")
    ax.set_title(
        f"{result['dataset']}: horizon {result['horizon']}, {result['action_dim']}-D, {result['normalization_mode']}, "
        f"vocab {result['vocab_size']}\nstars: tokens at MSE {result['target_mse']:.2e} (dashed)",
        fontsize=10,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(CompareTransformsConfig, compare, argv)


if __name__ == "__main__":
    sys.exit(main())
