"""fastplus-eval-offline: held-out action error of a trained checkpoint on a local LeRobotDataset.

Example::

    fastplus-eval-offline --checkpoint=outputs/train/checkpoints/last/pretrained_model \\
        --root=/data/my_dataset --episodes='[40,41,42,43]' --output_dir=outputs/eval_offline

For evenly spaced frames of the chosen (held-out) episodes, every decoding the checkpoint has predicts a chunk from
the recorded observation, scored against the recorded actions and against "hold the current state" and "range
centre" (``lerobot_fastplus.evaluation.offline`` says how). Writes ``eval_offline.json`` and ``eval_offline.png``
(held-out chunks against predictions) and prints the table.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lerobot_fastplus.evaluation.offline_config import EvalOfflineConfig
from lerobot_fastplus.tools.cli import run_cli

if TYPE_CHECKING:
    from lerobot_fastplus.evaluation.offline import OfflineEvalResult


def run(cfg: EvalOfflineConfig) -> OfflineEvalResult:
    from lerobot_fastplus.evaluation.offline import evaluate_checkpoint, format_result, save_result

    result = evaluate_checkpoint(cfg)
    out = Path(cfg.output_dir) if cfg.output_dir else Path(cfg.checkpoint).parent / "eval_offline"
    save_result(result, out)
    print(format_result(result))
    print(f"eval_offline.json: {result.json_path}\neval_offline.png:  {result.png_path}")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(EvalOfflineConfig, run, argv)


if __name__ == "__main__":
    sys.exit(main())
