"""The learning study's settings (``StudyConfig``, its command line) and the fixed names of what it trains and
scores."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from lerobot_fastplus.data.chunks import parse_normalization_mode
from lerobot_fastplus.policies.common import GEMMA_VARIANTS
from lerobot_fastplus.policies.common.backbone import TINY_VARIANT

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FASTPLUS_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
TRAINED = ("pi05", "pi05_ki", "pi0_fast")
# evaluation name -> (trained policy, pi05_ki action_decoding or None)
EVALUATED = {
    "pi05": ("pi05", None),
    "pi05_ki/flow": ("pi05_ki", "flow"),
    "pi05_ki/fast": ("pi05_ki", "fast"),
    "pi0_fast": ("pi0_fast", None),
}
AUTOREGRESSIVE = ("pi05_ki/fast", "pi0_fast")
MAX_ACTION_TOKENS = 256  # pi0 default: the longest training sequence (BOS + targets)


@dataclass
class StudyConfig:
    # Local LeRobotDataset directory (default: g1_bottle_pick under $FASTPLUS_SHARED_DATA or ../shared/data).
    root: str | None = None
    # Dataset repo id; for a local dataset only a label (default: local/<root folder name>).
    repo_id: str | None = None
    # Where <name>.json and <name>.png go.
    output_dir: str = "outputs/learning_study"
    # File stem of the outputs (default: learning_study_<dataset folder>).
    name: str | None = None
    # Policies to train: any of pi05, pi05_ki, pi0_fast.
    policies: list[str] = field(default_factory=lambda: list(TRAINED))
    # Optimizer steps per policy.
    steps: int = 1500
    # Evaluate on the held-out frames every this many steps (and at step 0 and the last step).
    eval_every: int = 100
    batch_size: int = 8
    # One full study per seed (weights, data order, noise); the table reports the mean over seeds.
    seeds: list[int] = field(default_factory=lambda: [0])
    # Peak learning rate of the policies' own AdamW + cosine-with-warmup presets (warm-up/decay auto-scaled to
    # --steps as lerobot-train does). 3e-3 suits the tiny randomly initialised models (faster than 1e-3 for both
    # the flow and the FAST losses on g1, and stable); pi0's 2.5e-5 is a fine-tuning rate.
    lr: float = 3e-3
    # Backbone / action expert size: gemma_tiny + gemma_tiny, or gemma_2b + gemma_300m (the published pi0 sizes).
    paligemma_variant: str = TINY_VARIANT
    action_expert_variant: str = TINY_VARIANT
    # Square image side the policies resize to (default: 64 for gemma_tiny, 224 otherwise).
    image_size: int | None = None
    # float32 or bfloat16 (bfloat16 for the published sizes on a GPU).
    dtype: str = "float32"
    device: str = "cpu"
    # Drop the camera features from the policies' inputs (state + prompt only).
    image_free: bool = False
    # Without camera, core pi05 raises "All image features are missing" at the first batch. true: give it the
    # prompt-only prefix pi05_ki and pi0_fast use (recorded in the JSON); false: leave core pi05 out.
    patch_core_pi05_without_camera: bool = True
    chunk_size: int = 50
    # Steps of the predicted chunk that are scored (and executed at deployment).
    n_action_steps: int = 50
    # Steps per FAST sub-chunk (the FAST tokenizer's horizon).
    split_every: int = 10
    # FAST tokenizer vocabulary, fitted on the training episodes.
    vocab_size: int = 1024
    # LeRobot normalisation of state and action for all three policies (see the module docstring).
    normalization: str = "MIN_MAX"
    # Train all three on actions relative to the current state (LeRobot's --policy.use_relative_actions), except
    # the dimensions named in relative_exclude_joints; their action statistics are then computed over the training
    # episodes' relative chunks, and the FAST tokenizer is fitted on those chunks' sub-chunks. Errors are always
    # scored on absolute actions (after each policy's post-processor), normalised with the dataset's statistics.
    relative_actions: bool = False
    relative_exclude_joints: list[str] = field(default_factory=lambda: ["gripper"])
    # Instead of training: combine earlier JSONs of this script that differ only in their seeds (and machine) into
    # one (e.g. seeds run as parallel processes), re-deriving the summary, comparisons, table and plot.
    merge: list[str] | None = None
    # Prompt length in text tokens (pi0 default 200; the prompt here is task + discretised state).
    prompt_length: int = 64
    # Share of episodes (per task, the last ones) held out for evaluation, as lerobot-train's --dataset.eval_split.
    eval_split: float = 0.15
    # Held-out frames scored at every evaluation (evenly spaced over the held-out episodes).
    eval_frames: int = 48
    # After training, held-out frames on which pi05_ki decodes with flow and with its FAST head, to measure whether
    # their disagreement predicts the flow chunk's error (Spearman's rho); 0 skips it.
    confidence_frames: int = 192
    eval_batch_size: int = 16
    # Single-observation predictions timed per evaluation (after one warm-up call).
    latency_frames: int = 5
    # torch intra-op threads (default: torch's choice); recorded in the JSON.
    threads: int | None = None
    # DataLoader workers (0: load in the training process).
    num_workers: int = 0
    # Text tokenizer for all three policies (default: a local word-level stand-in with PaliGemma's id layout).
    text_tokenizer: str | None = None
    # Free text stored in the JSON (e.g. "2 shared cores, other jobs running").
    note: str = ""

    def dataset_root(self) -> Path:
        return Path(self.root).expanduser().resolve() if self.root else SHARED_DATA / "g1_bottle_pick"

    def dataset_repo_id(self) -> str:
        return self.repo_id or f"local/{self.dataset_root().name}"

    def resolved_image_size(self) -> int:
        return self.image_size or (64 if self.paligemma_variant == TINY_VARIANT else 224)

    def validate(self) -> None:
        unknown = sorted(set(self.policies) - set(TRAINED))
        if unknown or not self.policies:
            raise ValueError(f"--policies={self.policies}: choose from {list(TRAINED)}.")
        for name in (
            "steps",
            "eval_every",
            "batch_size",
            "eval_frames",
            "eval_batch_size",
            "chunk_size",
            "n_action_steps",
            "split_every",
            "prompt_length",
            "latency_frames",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name} must be a positive integer, got {getattr(self, name)}.")
        if self.n_action_steps > self.chunk_size or self.split_every > self.chunk_size:
            raise ValueError(
                f"--n_action_steps ({self.n_action_steps}) and --split_every ({self.split_every}) must be at most "
                f"--chunk_size ({self.chunk_size})."
            )
        if not 0 < self.eval_split < 1:
            raise ValueError(f"--eval_split must be in (0, 1), got {self.eval_split}.")
        for name in ("paligemma_variant", "action_expert_variant"):
            if getattr(self, name) not in GEMMA_VARIANTS:
                raise ValueError(f"--{name}={getattr(self, name)!r}: use one of {sorted(GEMMA_VARIANTS)}.")
        tiny = [v == TINY_VARIANT for v in (self.paligemma_variant, self.action_expert_variant)]
        if "pi05" in self.policies and any(tiny) and not all(tiny):
            raise ValueError("core pi05 runs at gemma_tiny only with both variants gemma_tiny (or gemma_2b + 300m).")
        parse_normalization_mode(self.normalization)
