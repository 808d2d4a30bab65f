"""How well a FAST tokenizer fits a set of action chunks: token counts, errors, clipping, vocabulary use.

Compression is measured against naive per-step binning (one token per value, ``H * D`` per chunk).
Errors are given in normalised units (what the tokenizer sees) and in the dataset's original units
(after LeRobot's unnormaliser, what a robot would execute).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from lerobot_fastplus.data.chunks import ActionChunks, RangeSummary, range_warning, summarize_range
from lerobot_fastplus.fast import FastTokenizer, SplitLayout

ENCODE_BATCH = 2048
PLOT_DIMS = 4


@dataclass(frozen=True)
class TokenCounts:
    mean: float
    p95: float
    max: int
    min: int

    @classmethod
    def of(cls, lengths: np.ndarray) -> TokenCounts:
        return cls(
            mean=float(lengths.mean()),
            p95=float(np.percentile(lengths, 95)),
            max=int(lengths.max()),
            min=int(lengths.min()),
        )


@dataclass(frozen=True)
class Errors:
    """Reconstruction errors over the chunks that decoded (failures are counted separately)."""

    mse_normalized: float
    max_abs_normalized: float
    mse_original: float
    max_abs_original: float
    mse_original_per_dim: list[float]

    @classmethod
    def of(cls, err_normalized: np.ndarray, err_original: np.ndarray) -> Errors | None:
        """None when no chunk decoded."""
        if err_normalized.size == 0:
            return None
        return cls(
            mse_normalized=float(np.mean(err_normalized**2)),
            max_abs_normalized=float(np.abs(err_normalized).max()),
            mse_original=float(np.mean(err_original**2)),
            max_abs_original=float(np.abs(err_original).max()),
            mse_original_per_dim=np.mean(err_original**2, axis=(0, 1)).tolist(),
        )


@dataclass(frozen=True)
class LayoutReport:
    """Token counts through the BOS / SPLIT / EOS layout, for chunks of ``chunk_size`` steps."""

    chunk_size: int
    split_every: int
    n_chunks: int
    tokens_per_chunk: TokenCounts
    parse_failures: int
    mse_normalized: float


@dataclass
class TokenizerReport:
    dataset: str
    repo_id: str
    normalization_mode: str
    n_chunks: int
    horizon: int
    action_dim: int
    tokenizer: dict[str, Any]
    normalized_range: RangeSummary
    range_warning: str | None
    tokens_per_chunk: TokenCounts
    naive_tokens_per_chunk: int
    compression: float
    errors: Errors | None
    decode_failures: int
    decode_failure_reasons: dict[str, int]
    clip: bool
    clipped_values: int
    clipped_share: float
    clipped_chunks: int
    ids_used: int
    vocab_utilisation: float
    top_token_id: int
    top_token_share: float
    encode_chunks_per_s: float
    decode_chunks_per_s: float
    fit_seconds: float | None = None
    layout: LayoutReport | None = None
    # Arrays for the plot; not part of report.json.
    token_lengths: np.ndarray | None = field(default=None, repr=False)
    decoded_original: np.ndarray | None = field(default=None, repr=False)
    layout_lengths: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        skip = {"token_lengths", "decoded_original", "layout_lengths"}
        return {
            key: asdict(value) if is_dataclass(value) else value for key, value in vars(self).items() if key not in skip
        }


def _encode(tokenizer: FastTokenizer, normalized: np.ndarray, clip: bool) -> tuple[list[list[int]], float]:
    ids: list[list[int]] = []
    start = time.perf_counter()
    for begin in tqdm(range(0, len(normalized), ENCODE_BATCH), desc="encoding", unit="batch", disable=None):
        ids += tokenizer.encode(normalized[begin : begin + ENCODE_BATCH], clip=clip)
    return ids, time.perf_counter() - start


def _layout_report(
    tokenizer: FastTokenizer, chunks: ActionChunks, split_every: int, clip: bool
) -> tuple[LayoutReport, np.ndarray]:
    layout = SplitLayout(tokenizer, chunks.horizon, split_every)
    batch = layout.build(chunks.normalized, clip=clip)
    parsed = layout.parse(batch.ids, action_dim=chunks.action_dim)
    report = LayoutReport(
        chunk_size=chunks.horizon,
        split_every=split_every,
        n_chunks=len(chunks.normalized),
        tokens_per_chunk=TokenCounts.of(batch.lengths),
        parse_failures=parsed.n_failed,
        mse_normalized=float(np.mean((parsed.actions - chunks.normalized) ** 2)),
    )
    return report, batch.lengths


def compute_report(
    tokenizer: FastTokenizer,
    chunks: ActionChunks,
    *,
    clip: bool = False,
    layout_chunks: ActionChunks | None = None,
    split_every: int | None = None,
    fit_seconds: float | None = None,
) -> TokenizerReport:
    """Encode and decode every chunk and measure the result.

    ``clip=False`` raises (from the tokenizer) when a coefficient is not encodable; ``clip=True``
    clips and reports how many values needed it. ``layout_chunks`` (chunks of the policy's
    ``chunk_size`` steps) adds the split-layout section.
    """
    x = chunks.normalized
    n, horizon, dim = x.shape
    ids, encode_s = _encode(tokenizer, x, clip)
    lengths = np.array([len(seq) for seq in ids])

    start = time.perf_counter()
    decoded = tokenizer.decode(ids, time_horizon=horizon, action_dim=dim)
    decode_s = time.perf_counter() - start

    ok = decoded.valid
    reasons: dict[str, int] = {}
    for reason in decoded.reasons:
        if reason is not None:
            reasons[reason] = reasons.get(reason, 0) + 1
    decoded_original = chunks.unnormalize(decoded.actions)
    errors = Errors.of(decoded.actions[ok] - x[ok], decoded_original[ok] - chunks.raw[ok])

    clipped = tokenizer.out_of_range(x) if clip else np.zeros(n, dtype=np.int64)
    counts = np.bincount(np.concatenate([np.asarray(seq, dtype=np.int64) for seq in ids]), minlength=tokenizer.num_ids)

    layout, layout_lengths = None, None
    if layout_chunks is not None:
        layout, layout_lengths = _layout_report(tokenizer, layout_chunks, split_every or horizon, clip)

    summary = summarize_range(chunks)
    return TokenizerReport(
        dataset=chunks.dataset,
        repo_id=chunks.repo_id,
        normalization_mode=chunks.mode.value,
        n_chunks=n,
        horizon=horizon,
        action_dim=dim,
        tokenizer={
            "transform": tokenizer.transform,
            "scale": tokenizer.scale,
            "vocab_size": tokenizer.vocab_size,
            "num_ids": tokenizer.num_ids,
            "min_token": tokenizer.min_token,
            "max_token": tokenizer.max_token,
            "time_horizon": tokenizer.time_horizon,
            "action_dim": tokenizer.action_dim,
        },
        normalized_range=summary,
        range_warning=range_warning(summary, chunks),
        tokens_per_chunk=TokenCounts.of(lengths),
        naive_tokens_per_chunk=horizon * dim,
        compression=horizon * dim / float(lengths.mean()),
        errors=errors,
        decode_failures=decoded.n_invalid,
        decode_failure_reasons=reasons,
        clip=clip,
        clipped_values=int(clipped.sum()),
        clipped_share=float(clipped.sum() / x.size),
        clipped_chunks=int((clipped > 0).sum()),
        ids_used=int((counts > 0).sum()),
        vocab_utilisation=float((counts > 0).mean()),
        top_token_id=int(counts.argmax()),
        top_token_share=float(counts.max() / counts.sum()),
        encode_chunks_per_s=n / max(encode_s, 1e-9),
        decode_chunks_per_s=n / max(decode_s, 1e-9),
        fit_seconds=fit_seconds,
        layout=layout,
        token_lengths=lengths,
        decoded_original=decoded_original,
        layout_lengths=layout_lengths,
    )


def format_report(report: TokenizerReport) -> str:
    """The report as an aligned two-column table."""
    tok, err, counts = report.tokenizer, report.errors, report.tokens_per_chunk
    if err is None:
        error_rows = [("reconstruction", "no chunk decoded")]
    else:
        error_rows = [
            ("MSE (normalised)", f"{err.mse_normalized:.3e}"),
            ("max abs err (normalised)", f"{err.max_abs_normalized:.4f}"),
            ("MSE (original units)", f"{err.mse_original:.3e}"),
            ("max abs err (original)", f"{err.max_abs_original:.4f}"),
        ]
    rows: list[tuple[str, str]] = [
        ("dataset", f"{report.repo_id} ({report.dataset})"),
        ("chunks", f"{report.n_chunks} x {report.horizon} steps x {report.action_dim} dims"),
        ("normalisation", report.normalization_mode),
        ("normalised range", f"{report.normalized_range.low:.3f} .. {report.normalized_range.high:.3f}"),
        (
            "tokenizer",
            f"{tok['transform']}, scale {tok['scale']:g}, vocab {tok['vocab_size']}, lowest encodable coefficient "
            f"{tok['min_token']}",
        ),
        ("tokens per chunk", f"mean {counts.mean:.2f}, p95 {counts.p95:.1f}, max {counts.max}, min {counts.min}"),
        ("compression", f"{report.compression:.2f}x vs {report.naive_tokens_per_chunk} naive tokens per chunk"),
        *error_rows,
        ("decode failures", f"{report.decode_failures} of {report.n_chunks}"),
    ]
    if report.decode_failure_reasons:
        rows += [("  reason", f"{n} x {why}") for why, n in report.decode_failure_reasons.items()]
    if report.clip:
        rows.append(
            (
                "clipped coefficients",
                f"{report.clipped_values} ({report.clipped_share:.3%}) in {report.clipped_chunks} chunks",
            )
        )
    rows += [
        ("vocabulary used", f"{report.ids_used} of {tok['num_ids']} ids ({report.vocab_utilisation:.1%})"),
        ("most frequent id", f"{report.top_token_id}: {report.top_token_share:.1%} of all tokens"),
        ("encode / decode speed", f"{report.encode_chunks_per_s:,.0f} / {report.decode_chunks_per_s:,.0f} chunks/s"),
    ]
    if report.fit_seconds is not None:
        rows.append(("fit time", f"{report.fit_seconds:.2f} s"))
    if report.layout is not None:
        lay = report.layout
        lc = lay.tokens_per_chunk
        rows += [
            (
                f"layout {lay.chunk_size} steps / {lay.split_every}",
                f"mean {lc.mean:.2f}, p95 {lc.p95:.1f}, max {lc.max} tokens (with BOS/SPLIT/EOS), "
                f"{lay.n_chunks} chunks",
            ),
            ("layout parse", f"{lay.parse_failures} failures, MSE (normalised) {lay.mse_normalized:.3e}"),
        ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"  {name:<{width}}  {value}" for name, value in rows)


def action_axis_label(chunks: ActionChunks) -> str:
    """What the plotted action values are: absolute, or relative to the state at the chunk's first frame."""
    if chunks.relative_exclude_joints is None:
        return "action (original units)"
    kept = f"; {', '.join(chunks.relative_exclude_joints)} absolute" if chunks.relative_exclude_joints else ""
    return f"action - state at chunk start\n(original units{kept})"


def plot_report(report: TokenizerReport, chunks: ActionChunks, path: str | Path, *, n_examples: int = 3) -> Path:
    """Real chunks vs their reconstructions (original units) and the token-length histogram."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = report.token_lengths
    by_length = np.argsort(lengths, kind="stable")
    picks = [by_length[int(q * (len(by_length) - 1))] for q in np.linspace(0, 1, n_examples)]
    fig, axes = plt.subplots(2, n_examples, figsize=(5 * n_examples, 8), squeeze=False)
    steps = np.arange(report.horizon)
    for ax, i in zip(axes[0], picks, strict=True):
        dims = np.argsort(-chunks.raw[i].std(axis=0))[:PLOT_DIMS]
        for colour, d in enumerate(dims):
            c = f"C{colour}"
            ax.plot(steps, chunks.raw[i, :, d], "-o", color=c, markersize=3, label=f"dim {chunks.dim_name(int(d))}")
            ax.plot(steps, report.decoded_original[i, :, d], "--", color=c)
        tokens = f"{lengths[i]} token{'' if lengths[i] == 1 else 's'}"
        ax.set_title(f"episode {chunks.episode_index[i]}, frame {chunks.start_frame[i]}: {tokens}", fontsize=9)
        ax.set_xlabel("step (solid: data, dashed: decoded)")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel(action_axis_label(chunks))
    hist = plt.subplot2grid((2, n_examples), (1, 0), colspan=n_examples, fig=fig)
    for ax in axes[1]:
        ax.remove()
    bins = np.arange(lengths.min(), lengths.max() + 2) - 0.5
    hist.hist(lengths, bins=bins, alpha=0.8, label=f"{report.horizon}-step chunks")
    if report.layout_lengths is not None:
        layout_bins = np.arange(report.layout_lengths.min(), report.layout_lengths.max() + 2) - 0.5
        hist.hist(report.layout_lengths, bins=layout_bins, alpha=0.6, label=f"{report.layout.chunk_size}-step layout")
    hist.set_xlabel("tokens per chunk")
    hist.set_ylabel("chunks")
    hist.legend()
    mse = "n/a" if report.errors is None else f"{report.errors.mse_normalized:.2e}"
    hist.set_title(
        f"{report.compression:.2f}x compression, MSE {mse} (normalised), {report.vocab_utilisation:.0%} of ids used"
    )
    fig.suptitle(
        f"{report.repo_id}: FAST tokenizer ({report.tokenizer['transform']}) on {report.n_chunks} chunks "
        f"({report.normalization_mode})"
    )
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def save_report(
    report: TokenizerReport, chunks: ActionChunks, directory: str | Path, extra: dict[str, Any] | None = None
) -> tuple[Path, Path]:
    """Write ``report.json`` (the report plus ``extra``, e.g. the tool's config) and ``report.png``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / "report.json"
    json_path.write_text(json.dumps({**(extra or {}), **report.to_dict()}, indent=2))
    return json_path, plot_report(report, chunks, directory / "report.png")
