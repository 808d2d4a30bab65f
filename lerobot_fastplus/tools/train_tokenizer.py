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
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from lerobot_fastplus.data.chunk_source import ChunkSourceConfig
from lerobot_fastplus.tools.cli import ToolResult, check_layout_args, print_range, run_cli, write_outputs


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
        from lerobot_fastplus.fast.transforms import check_transform

        super().validate()
        if self.vocab_size <= 0 or self.scale <= 0:
            raise ValueError(f"--vocab_size ({self.vocab_size}) and --scale ({self.scale}) must be positive.")
        self.transform = check_transform(self.transform)


def train(cfg: TrainTokenizerConfig) -> ToolResult:
    """Fit, save and report. Raises ValueError with a readable message on bad input."""
    from lerobot_fastplus.data.chunks import open_dataset, tokenizer_chunks
    from lerobot_fastplus.evaluation.tokenizer_report import compute_report
    from lerobot_fastplus.fast import FastTokenizer

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


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(TrainTokenizerConfig, train, argv)


if __name__ == "__main__":
    sys.exit(main())
