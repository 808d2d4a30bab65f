"""The flags that choose a dataset and its action chunks, shared by the tokenizer commands.

Apart from ``chunks`` so that a command's config parses (and ``--help`` prints) without importing LeRobot or torch:
the methods import them when a command runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ChunkSourceConfig:
    """Which dataset and which action chunks (shared by the train and check tools)."""

    # Dataset repo id; for a local dataset only a label (defaults to "local/<root folder name>").
    repo_id: str | None = None
    # Local dataset directory (default: $HF_LEROBOT_HOME/<repo_id>). Nothing is downloaded.
    root: str | None = None
    # Steps per action chunk (FAST time horizon).
    horizon: int = 10
    # LeRobot normalisation of the action: QUANTILES, MIN_MAX, MEAN_STD, QUANTILE10 or IDENTITY.
    normalization_mode: str = "QUANTILES"
    # Start a chunk every `stride` frames within each episode.
    stride: int = 1
    # Keep at most this many chunks (seeded random subsample).
    max_chunks: int | None = None
    # Only these episode indices (default: all).
    episodes: list[int] | None = None
    # Seed of the chunk subsample.
    seed: int = 0
    # Optional layout section: tokens per chunk of `chunk_size` steps split every `split_every` steps.
    chunk_size: int | None = None
    # Sub-chunk length of the layout (default: the horizon).
    split_every: int | None = None
    # For a policy trained with --policy.use_relative_actions=true: every chunk of --chunk_size steps minus the
    # state at its first frame (LeRobot's RelativeActionsProcessorStep), cut into --horizon-step sub-chunks, which is
    # what the policy's FAST step tokenizes. meta/stats.json must then hold relative-action statistics
    # (lerobot-edit-dataset --operation.type=recompute_stats --operation.relative_action=true ...).
    relative_actions: bool = False
    # Action names kept absolute with relative actions (the policy's --policy.relative_exclude_joints).
    relative_exclude_joints: list[str] = field(default_factory=lambda: ["gripper"])

    def dataset_root(self) -> Path:
        if self.root:
            return Path(self.root).expanduser()
        if self.repo_id:
            from lerobot.utils.constants import HF_LEROBOT_HOME

            return HF_LEROBOT_HOME / self.repo_id
        raise ValueError("no dataset given: pass --root=<local LeRobotDataset directory> (and optionally --repo_id).")

    def dataset_repo_id(self) -> str:
        return self.repo_id or f"local/{self.dataset_root().name}"

    def validate(self) -> None:
        """Argument checks that need no data."""
        from lerobot_fastplus.data.chunks import parse_normalization_mode

        parse_normalization_mode(self.normalization_mode)
        for name in ("horizon", "stride", "max_chunks", "chunk_size", "split_every"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"--{name} must be a positive integer, got {value}.")
        if self.split_every is not None and self.chunk_size is None:
            raise ValueError("--split_every only applies to the layout section; also pass --chunk_size.")
        if self.relative_actions and self.chunk_size is None:
            raise ValueError(
                "--relative_actions=true needs --chunk_size (the policy's): relative actions are taken against the "
                "state at the start of each chunk of that many steps."
            )
