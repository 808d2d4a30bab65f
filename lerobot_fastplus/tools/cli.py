"""What the console scripts share: flag parsing with readable errors, and the tokenizer tools' common steps.

``run_cli`` parses a command's flags with draccus and turns a ``ValueError`` into its message and exit code 2; every
command's ``main`` goes through it. The rest is shared by ``fastplus-train-tokenizer`` and
``fastplus-check-tokenizer`` (and the range printout by ``fastplus-compare-transforms``): the layout flags checked
against the dataset, the normalised range with its warning, and the report written and printed.

Like every command module, this one imports LeRobot, torch and the package's data and evaluation code only inside
the functions that run a command: the config dataclasses parse, and ``--help`` prints, without them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import draccus
from draccus.utils import DecodingError

if TYPE_CHECKING:
    from lerobot.datasets import LeRobotDataset

    from lerobot_fastplus.data.chunk_source import ChunkSourceConfig
    from lerobot_fastplus.data.chunks import ActionChunks
    from lerobot_fastplus.evaluation.tokenizer_report import TokenizerReport


def run_cli(config_class: type, run: Callable[[Any], Any], argv: Sequence[str] | None) -> int:
    """Parse flags with draccus and run; a ValueError becomes its message and exit code 2."""
    try:
        cfg = draccus.parse(config_class=config_class, args=argv)
        run(cfg)
    except (ValueError, DecodingError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


@dataclass
class ToolResult:
    """What a tokenizer tool measured and where it wrote it."""

    report: TokenizerReport
    output_dir: Path
    tokenizer_dir: Path
    report_json: Path
    report_png: Path


def print_range(chunks: ActionChunks) -> None:
    """The normalised value range, and a warning on stderr when it is far wider than [-1, 1]."""
    from lerobot_fastplus.data.chunks import range_warning, summarize_range

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
    from lerobot_fastplus.data.chunks import check_horizon

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
    from lerobot_fastplus.evaluation.tokenizer_report import format_report, save_report

    json_path, png_path = save_report(report, chunks, output_dir, extra)
    print(format_report(report))
    return json_path, png_path
