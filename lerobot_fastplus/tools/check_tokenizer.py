"""fastplus-check-tokenizer: measure an existing FAST tokenizer on the actions of a local LeRobotDataset.

Works with tokenizers written by ``fastplus-train-tokenizer`` and with the published FAST+ directory
layout (``processor_config.json`` + ``tokenizer.json``), whatever their transform (the report names it).
Coefficients the tokenizer cannot encode are clipped, and the report says how many were. Example::

    fastplus-check-tokenizer --tokenizer=outputs/so101_fast/tokenizer --root=/data/so101_record_test
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lerobot_fastplus.data.chunk_source import ChunkSourceConfig
from lerobot_fastplus.tools.cli import ToolResult, check_layout_args, print_range, run_cli, write_outputs

if TYPE_CHECKING:
    from lerobot_fastplus.fast import FastTokenizer

DEFAULT_HORIZON = 10
_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


@dataclass
class CheckTokenizerConfig(ChunkSourceConfig):
    # FAST tokenizer directory (ours, or the published FAST+ layout); a hub id downloads it (needs network).
    tokenizer: str | None = None
    # Steps per chunk (default: the tokenizer's recorded horizon, else 10).
    horizon: int | None = None
    # Where report.json and report.png go (default: outputs/fastplus_check/<dataset>).
    output_dir: str | None = None


def looks_like_repo_id(value: str) -> bool:
    """``owner/name`` that is not an obviously local path: FastTokenizer.load would try the hub."""
    return bool(_REPO_ID.match(value)) and not value.startswith((".", "~"))


def load_tokenizer(location: str | None) -> FastTokenizer:
    from lerobot_fastplus.fast import FastTokenizer

    if not location:
        raise ValueError("pass --tokenizer=<FAST tokenizer directory>, e.g. <output_dir>/tokenizer from training.")
    if not Path(location).expanduser().exists() and not looks_like_repo_id(location):
        raise ValueError(
            f"tokenizer directory {location} does not exist. Pass the 'tokenizer' directory written by "
            "fastplus-train-tokenizer (<output_dir>/tokenizer) or a published FAST tokenizer directory."
        )
    return FastTokenizer.load(location)


def check(cfg: CheckTokenizerConfig) -> ToolResult:
    """Load, encode with clipping, report. Raises ValueError with a readable message on bad input."""
    from lerobot.utils.constants import ACTION

    from lerobot_fastplus.data.chunks import open_dataset, tokenizer_chunks
    from lerobot_fastplus.evaluation.tokenizer_report import compute_report

    cfg.validate()
    tokenizer = load_tokenizer(cfg.tokenizer)
    root = cfg.dataset_root()
    dataset = open_dataset(root, cfg.dataset_repo_id(), cfg.episodes)
    dim = int(np.prod(dataset.meta.features[ACTION]["shape"]))
    if tokenizer.action_dim is not None and tokenizer.action_dim != dim:
        raise ValueError(
            f"the tokenizer in {cfg.tokenizer} was fitted on {tokenizer.action_dim}-D actions, but {root} has "
            f"{dim}-D actions. Train a tokenizer for this dataset with fastplus-train-tokenizer --root={root}."
        )
    horizon = cfg.horizon or tokenizer.time_horizon or DEFAULT_HORIZON
    if tokenizer.time_horizon is not None and horizon != tokenizer.time_horizon:
        print(
            f"note: the tokenizer was fitted on {tokenizer.time_horizon}-step chunks; checking {horizon}-step chunks.",
            file=sys.stderr,
        )
    check_layout_args(cfg, dataset, horizon)
    chunks, layout = tokenizer_chunks(cfg, dataset, horizon)
    print_range(chunks)
    report = compute_report(tokenizer, chunks, clip=True, layout_chunks=layout, split_every=cfg.split_every)
    output_dir = Path(cfg.output_dir or Path("outputs") / "fastplus_check" / root.name)
    extra = {"tool": "fastplus-check-tokenizer", "config": asdict(cfg), "tokenizer_dir": str(cfg.tokenizer)}
    json_path, png_path = write_outputs(report, chunks, output_dir, extra)
    print(f"report.json: {json_path}\nreport.png:  {png_path}")
    return ToolResult(report, output_dir, Path(cfg.tokenizer), json_path, png_path)


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(CheckTokenizerConfig, check, argv)


if __name__ == "__main__":
    sys.exit(main())
