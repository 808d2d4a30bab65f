"""Flags of the held-out evaluation (``fastplus-eval-offline``, and ``fastplus-demo``'s last stage).

Apart from ``offline`` so that the command's config parses (and ``--help`` prints) without importing LeRobot or
torch. ``validate`` refuses a ``--checkpoint`` that cannot be one before anything is loaded or written, with the
folder to pass instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CONFIG_FILE = "config.json"  # what every LeRobot policy checkpoint directory holds
CHECKPOINT_EXAMPLE = "outputs/train/<run>/checkpoints/last/pretrained_model"


@dataclass
class EvalOfflineConfig:
    # A checkpoint directory (.../checkpoints/<step>/pretrained_model) or a hub id.
    checkpoint: str = ""
    # Local dataset directory; nothing is downloaded.
    root: str = ""
    # Dataset repo id (only a label for a local root; default "local/<root folder name>").
    repo_id: str | None = None
    # Episodes to evaluate on, e.g. '[40,41]' (default: all). Use episodes the policy was not trained on.
    episodes: list[int] | None = None
    # Number of evenly spaced frames (each with a complete chunk of n_action_steps recorded actions).
    n_frames: int = 48
    # Torch seed of the flow-sampling noise (same seed, same numbers).
    seed: int = 0
    # Override the checkpoint's device (e.g. cpu).
    device: str | None = None
    # Where eval_offline.json and eval_offline.png go (default: next to the checkpoint).
    output_dir: str | None = None

    def validate(self) -> None:
        if not self.checkpoint or not self.root:
            raise ValueError("--checkpoint=<pretrained_model dir> and --root=<dataset dir> are required.")
        if self.n_frames < 1:
            raise ValueError(f"--n_frames must be positive, got {self.n_frames}.")
        check_checkpoint_path(self.checkpoint)


def check_checkpoint_path(checkpoint: str) -> None:
    """Refuse a local ``checkpoint`` that is no policy checkpoint directory, naming the one to pass; a path that
    does not exist passes only when it reads as a hub repo id (``owner/name``)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    path = Path(checkpoint).expanduser()
    flag = f"--checkpoint={checkpoint}"
    if not path.exists():
        try:
            validate_repo_id(checkpoint)
        except HFValidationError:
            raise ValueError(
                f"{flag} does not exist (and is not a hub repo id). Pass the pretrained_model folder of a "
                f"lerobot-train checkpoint, e.g. {CHECKPOINT_EXAMPLE}."
            ) from None
        return
    if not path.is_dir():
        raise ValueError(f"{flag} is a file; pass the checkpoint's pretrained_model folder, e.g. {CHECKPOINT_EXAMPLE}.")
    if (path / CONFIG_FILE).is_file():
        return
    for inner, what in (
        (Path("pretrained_model"), "a checkpoint step folder"),
        (Path("checkpoints") / "last" / "pretrained_model", "a lerobot-train output folder"),
        (Path("last") / "pretrained_model", "a lerobot-train checkpoints folder"),
    ):
        if (path / inner).is_dir():
            raise ValueError(f"{flag} is {what}, not a checkpoint: pass --checkpoint={path / inner}")
    raise ValueError(
        f"{flag} holds no {CONFIG_FILE}, so it is not a policy checkpoint. Pass the pretrained_model folder of a "
        f"lerobot-train checkpoint, e.g. {CHECKPOINT_EXAMPLE}."
    )
