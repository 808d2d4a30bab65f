"""fastplus-train-tokenizer: fit a FAST tokenizer on the actions of a local LeRobotDataset.

Example::

    fastplus-train-tokenizer --root=/data/so101_record_test --horizon=10 --vocab_size=1024 \\
        --output_dir=outputs/so101_fast --chunk_size=50 [--transform=dct]

writes ``<output_dir>/tokenizer`` (the FAST tokenizer directory), ``<output_dir>/report.json`` and
``<output_dir>/report.png``, and prints the report.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import draccus
from draccus.utils import DecodingError
from lerobot.datasets import LeRobotDataset

from lerobot_fastplus.fast import FastTokenizer
from lerobot_fastplus.fast.transforms import check_transform
from lerobot_fastplus.tools.chunks import (
    ActionChunks,
    ChunkSourceConfig,
    check_horizon,
    open_dataset,
    range_warning,
    summarize_range,
    tokenizer_chunks,
)
from lerobot_fastplus.tools.report import TokenizerReport, compute_report, format_report, save_report


@dataclass
class TrainTokenizerConfig(ChunkSourceConfig):
    # BPE vocabulary size (number of FAST token ids).
    vocab_size: int = 1024
    # Coefficients are multiplied by this before rounding (FAST+ uses 10).
    scale: float = 10.0
    # Transform along time: dct (FAST's, the only one core LeRobot can use), none, or an orthogonal PyWavelets
    # wavelet (haar, db2, db4, sym4, ...). fastplus-compare-transforms measures them on a dataset.
    transform: str = "dct"
    # Where tokenizer/, report.json and report.png go (default: outputs/fastplus_tokenizer/<dataset>).
    output_dir: str | None = None
    # Replace a tokenizer already saved in output_dir (refused otherwise, so nothing saved is lost).
    overwrite: bool = False

    def validate(self) -> None:
        super().validate()
        if self.vocab_size <= 0 or self.scale <= 0:
            raise ValueError(f"--vocab_size ({self.vocab_size}) and --scale ({self.scale}) must be positive.")
        self.transform = check_transform(self.transform)


@dataclass
class ToolResult:
    report: TokenizerReport
    output_dir: Path
    tokenizer_dir: Path
    report_json: Path
    report_png: Path


def print_range(chunks: ActionChunks) -> None:
    """The normalised value range, and a warning on stderr when it is far wider than [-1, 1]."""
    summary = summarize_range(chunks)
    share = summary.far_share_total
    print(
        f"{len(chunks.raw)} chunks of {chunks.horizon} x {chunks.action_dim} from {chunks.dataset}; "
        f"{chunks.mode.value}-normalised range {summary.low:.3f}..{summary.high:.3f} "
        f"({share:.2%} of values beyond |x| > {summary.far_threshold:g})"
    )
    warning = range_warning(summary, chunks)
    if warning:
        print(warning, file=sys.stderr)


def check_layout_args(cfg: ChunkSourceConfig, dataset: LeRobotDataset, horizon: int) -> None:
    if cfg.chunk_size is None:
        return
    check_horizon(dataset, cfg.chunk_size, "--chunk_size")
    split_every = cfg.split_every or horizon
    if cfg.relative_actions and split_every != horizon:
        raise ValueError(
            f"with --relative_actions=true the sub-chunks are the tokenizer's chunks: --split_every={split_every} "
            f"must equal --horizon={horizon}."
        )
    if split_every > cfg.chunk_size:
        raise ValueError(
            f"--split_every={split_every} is larger than --chunk_size={cfg.chunk_size}; pass --split_every <= "
            "chunk_size (usually the tokenizer's horizon)."
        )


def write_outputs(
    report: TokenizerReport, chunks: ActionChunks, output_dir: Path, extra: dict[str, Any]
) -> tuple[Path, Path]:
    json_path, png_path = save_report(report, chunks, output_dir, extra)
    print(format_report(report))
    return json_path, png_path


def train(cfg: TrainTokenizerConfig) -> ToolResult:
    """Fit, save and report. Raises ValueError with a readable message on bad input."""
    cfg.validate()
    root = cfg.dataset_root()
    output_dir = Path(cfg.output_dir or Path("outputs") / "fastplus_tokenizer" / root.name)
    if (output_dir / "tokenizer").exists() and not cfg.overwrite:
        raise ValueError(
            f"{output_dir / 'tokenizer'} already exists; pass --overwrite=true to replace it, or choose another "
            "--output_dir."
        )
    dataset = open_dataset(root, cfg.dataset_repo_id(), cfg.episodes)
    check_layout_args(cfg, dataset, cfg.horizon)
    chunks, layout = tokenizer_chunks(cfg, dataset, cfg.horizon)
    print_range(chunks)

    print(f"fitting FAST tokenizer (transform={cfg.transform}, vocab_size={cfg.vocab_size}, scale={cfg.scale:g}) ...")
    start = time.perf_counter()
    tokenizer = FastTokenizer.fit(
        chunks.normalized,
        scale=cfg.scale,
        vocab_size=cfg.vocab_size,
        transform=cfg.transform,
        show_progress=sys.stderr.isatty(),
    )
    fit_seconds = time.perf_counter() - start

    tokenizer_dir = tokenizer.save(output_dir / "tokenizer")
    report = compute_report(
        tokenizer,
        chunks,
        clip=False,
        layout_chunks=layout,
        split_every=cfg.split_every,
        fit_seconds=fit_seconds,
    )
    extra = {"tool": "fastplus-train-tokenizer", "config": asdict(cfg), "tokenizer_dir": str(tokenizer_dir)}
    json_path, png_path = write_outputs(report, chunks, output_dir, extra)
    print(f"tokenizer:   {tokenizer_dir}\nreport.json: {json_path}\nreport.png:  {png_path}")
    return ToolResult(report, output_dir, tokenizer_dir, json_path, png_path)


def run_cli(config_class: type, run: Callable[[Any], Any], argv: Sequence[str] | None) -> int:
    """Parse flags with draccus and run; a ValueError becomes its message and exit code 2."""
    try:
        cfg = draccus.parse(config_class=config_class, args=argv)
        run(cfg)
    except (ValueError, DecodingError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(TrainTokenizerConfig, train, argv)


if __name__ == "__main__":
    sys.exit(main())
