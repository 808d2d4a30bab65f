"""Learning study: LeRobot's core pi05, pi05_ki (flow and FAST decoding) and pi0_fast, trained side by side.

All three policies get the same backbone size (``gemma_tiny`` for backbone and expert by default, 64x64 images),
the same initial weights (pi05_ki is built from the seed; core pi05 loads its state dict, pi0_fast its PaliGemma
part), the same training batches in the same order, batch size, optimizer settings and number of steps:

* ``pi05``: LeRobot's core pi05 (flow matching only), built at the tiny size by ``core_pi05_tiny``;
* ``pi05_ki``: flow matching + FAST cross-entropy behind KI's stop-gradient; evaluated twice, sampling with flow
  (``pi05_ki/flow``) and decoding greedily from its FAST head (``pi05_ki/fast``, ``action_decoding="fast"``);
* ``pi0_fast``: this plugin's autoregressive pi0-FAST (split layout, constrained greedy decoding).

Data is LeRobot's training path: ``LeRobotDataset`` with the policies' ``delta_timestamps`` (the action chunk),
LeRobot's ``EpisodeAwareSampler`` (shuffled, seeded), uint8 images scaled to [0, 1] as ``lerobot-train`` does, and
each policy's own pre/post-processors from ``make_pre_post_processors`` with the dataset's ``meta/stats.json``.
The last ``ceil(eval_split * episodes)`` episodes (per task, ``lerobot-train``'s ``eval_split`` rule) are held out;
the FAST tokenizer is fitted on ``split_every``-step windows of the training episodes only.

Normalisation: MIN_MAX for state and action, for all three policies (``--normalization``). g1_bottle_pick's stored
q01/q99 are means of per-episode quantiles, so QUANTILES-normalised g1 actions reach -18..34: FAST then needs a
2048+ vocabulary and ~340 tokens per 50-step chunk (beyond pi0's 256-token budget), and pi0.5's 256 state bins,
which span [-1, 1], saturate. MIN_MAX keeps actions and state in [-1, 1] and gives ~172 tokens per chunk at vocab
1024 on g1 (MEAN_STD: ~190 at vocab 2048, states beyond [-1, 1] saturate the bins).

Every ``eval_every`` steps (and at step 0), on a fixed set of ``eval_frames`` evenly spaced held-out frames whose
first ``n_action_steps`` actions are real, with the same sampling-noise seed for every method and evaluation:

* held-out MSE of the predicted chunk's first ``n_action_steps`` steps against the recorded actions, normalised
  (policy output) and in original units (after the policy's post-processor);
* smoothness: mean squared second difference along time of those steps, normalised units (the recorded
  actions' value is reported as ``gt_smoothness``);
* latency: median seconds of one ``predict_action_chunk`` call for a single observation (batch 1, preprocessed);
* decode failures (autoregressive decoding): chunks with at least one missing / undecodable sub-chunk, from the
  split-layout parse the policy runs, plus generated tokens per chunk. Undecoded steps hold a neighbour or the
  normalised origin (the range centre), so AR rows also give MSE over decoded steps only and smoothness over
  completely decoded chunks (``*_decoded``);
* two trivial baselines on the same frames: predicting the range centre, and holding the current state (when state
  and action name the same joints);
* training: per-step loss terms and wall-clock (and process CPU) seconds per optimizer step (forward, backward,
  clipping, AdamW, scheduler; preprocessing and data loading are timed apart). On a shared machine wall-clock is
  inflated by other jobs: the JSON keeps the load average, CPU seconds and ``--note``.

Without cameras (``--image_free=true`` or a state-only dataset) pi05_ki and pi0_fast run on a prompt-only prefix
(task and state tokens; the plugin's ``StateOnlyCameras``). Core pi05 raises "All image features are missing from
the batch" there, although its model takes any number of images; ``--patch_core_pi05_without_camera`` (default
true) gives the study's core pi05 instance the same prompt-only prefix (recorded in the JSON), false leaves it out.

Repeatable: python/numpy/torch seeded, ``torch.use_deterministic_algorithms``, a seeded sampler, a private random
stream per policy (each method's numbers do not depend on which other methods run). Same machine + same thread
count -> same numbers.

Writes ``<output_dir>/<name>.json`` (settings, machine, per-evaluation curves, per-step losses and times) and
``<name>.png`` (learning curves), and prints a table. The defaults (g1, tiny, 1500 steps, batch 8, 48 frames scored
every 100 steps) took 17.5 minutes on g1_bottle_pick and 15 on so101_record_test (state-only) on a quiet 2-core
CPU, 2.5 GB peak RSS::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/learning_study.py
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/learning_study.py --root=../shared/data/so101_record_test

Check repeatability by running a short setting twice and comparing the JSONs (identical on one machine)::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/learning_study.py --steps=20 --eval_every=10 --eval_frames=8 \
        --output_dir=/tmp/a   # then --output_dir=/tmp/b

On a GPU, train longer and score more frames and seeds (the CPU defaults stop while the autoregressive
decoders still miss sub-chunks; not run here, no GPU was available), e.g. ``--device=cuda --steps=20000
--eval_every=1000 --batch_size=32 --eval_frames=256 --seeds=[0,1,2] --num_workers=8``. The published sizes
(PaliGemma gemma_2b + gemma_300m expert, 224x224, randomly initialised here: no pretrained weights are loaded)
need a large GPU (three 3B-parameter models side by side) and the real PaliGemma tokenizer (the local stand-in
only knows the task words)::

    python benchmarks/learning_study.py --device=cuda --paligemma_variant=gemma_2b \
        --action_expert_variant=gemma_300m --dtype=bfloat16 --steps=5000 --eval_every=500 --batch_size=32 \
        --eval_frames=256 --seeds=[0,1,2] --lr=1e-4 --text_tokenizer=google/paligemma-3b-pt-224 --num_workers=8
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any
from unittest import mock

import lerobot
import numpy as np
import torch
import transformers
from learning_study_report import (
    HOLD,
    compare,
    format_table,
    mean_within_group_spearman,
    plot,
    spearman_with_ci,
    summarize,
)
from lerobot.configs import FeatureType, NormalizationMode, PolicyFeature, PreTrainedConfig
from lerobot.datasets import EpisodeAwareSampler, LeRobotDataset, LeRobotDatasetMetadata
from lerobot.datasets.compute_stats import get_feature_stats
from lerobot.datasets.factory import resolve_delta_timestamps
from lerobot.policies import PreTrainedPolicy, make_pre_post_processors
from lerobot.policies.pi05 import PI05Config, PI05Policy
from lerobot.processor import NormalizerProcessorStep, TransitionKey, create_transition, tokenizer_processor
from lerobot.utils.constants import ACTION
from lerobot.utils.feature_utils import dataset_to_policy_features
from lerobot.utils.random_utils import get_rng_state, seeded_context, set_rng_state, set_seed
from torch import Tensor
from transformers import AutoTokenizer

from lerobot_fastplus.fast import FastTokenizer, SplitLayout
from lerobot_fastplus.policies.common import GEMMA_VARIANTS, write_paligemma_layout_tokenizer
from lerobot_fastplus.policies.common.backbone import TINY_VARIANT
from lerobot_fastplus.policies.common.core_tiny import core_pi05_tiny
from lerobot_fastplus.policies.pi0_fast.configuration_pi0_fast import PI0FastConfig
from lerobot_fastplus.policies.pi0_fast.modeling_pi0_fast import PI0FastPolicy
from lerobot_fastplus.policies.pi05_ki.configuration_pi05_ki import PI05KIConfig
from lerobot_fastplus.policies.pi05_ki.modeling_pi05_ki import PI05KIPolicy
from lerobot_fastplus.tools.chunks import (
    ActionChunks,
    action_normalizers,
    apply_action_step,
    load_action_chunks,
    parse_normalization_mode,
    split_into_subchunks,
)
from lerobot_fastplus.tools.evaluate_offline import pick_frames, smoothness
from lerobot_fastplus.tools.train_tokenizer import run_cli

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FASTPLUS_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
CORE_PI05_TEXT_TOKENIZER = "google/paligemma-3b-pt-224"  # hard-coded in core pi05's processor
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
logger = logging.getLogger("learning_study")


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


# ---------------------------------------------------------------------------------------------------- data
@dataclass
class StudyData:
    train: LeRobotDataset
    eval_batches: list[dict[str, Any]]  # held-out observations + action chunks, [0, 1] float images
    eval_frames: list[dict[str, int]]  # episode and frame of each scored frame
    train_episodes: list[int]
    eval_episodes: list[int]
    gt_normalized: torch.Tensor  # [N, n_action_steps, D]
    gt_original: torch.Tensor
    tasks: list[str]
    baselines: dict[str, dict[str, float]]  # held-out MSE of trivial predictors
    per_dim_hold_mse: list[float] | None  # per action dimension: MSE of holding the current state (normalised)
    confidence_batches: list[dict[str, Any]]  # more held-out frames, for the AR-vs-flow confidence measurement
    confidence_gt_normalized: torch.Tensor | None
    normalizer: Any  # LeRobot's action normaliser with the dataset's statistics: how every error is scaled
    held_out: LeRobotDataset


def split_episodes(meta: LeRobotDatasetMetadata, eval_split: float) -> tuple[list[int], list[int]]:
    """lerobot-train's rule: per task, the last ceil(eval_split * n) episodes are held out."""
    by_task: dict[str, list[int]] = {}
    for episode, tasks in zip(meta.episodes["episode_index"], meta.episodes["tasks"], strict=True):
        by_task.setdefault(tasks[0] if tasks else "", []).append(int(episode))
    train, held_out = [], []
    for episodes in by_task.values():
        n_eval = math.ceil(len(episodes) * eval_split)
        if n_eval >= len(episodes):
            raise ValueError(f"--eval_split={eval_split} leaves no training episode of {len(episodes)}.")
        train += episodes[: len(episodes) - n_eval]
        held_out += episodes[len(episodes) - n_eval :]
    return train, held_out


def to_float_images(batch: dict[str, Any], camera_keys: list[str]) -> dict[str, Any]:
    """uint8 camera frames -> float32 in [0, 1], exactly as lerobot-train does before the preprocessor."""
    for key in camera_keys:
        if key in batch and batch[key].dtype == torch.uint8:
            batch[key] = batch[key].to(torch.float32) / 255.0
    return batch


def load_data(cfg: StudyConfig, policy_cfg: PreTrainedConfig, meta: LeRobotDatasetMetadata) -> StudyData:
    train_episodes, eval_episodes = split_episodes(meta, cfg.eval_split)
    delta_timestamps = resolve_delta_timestamps(policy_cfg, meta)
    common = {
        "repo_id": meta.repo_id,
        "root": meta.root,
        "delta_timestamps": delta_timestamps,
        "video_backend": "pyav",
        "return_uint8": True,
    }
    train = LeRobotDataset(episodes=train_episodes, **common)
    held_out = LeRobotDataset(episodes=eval_episodes, **common)

    items, batches = held_out_batches(cfg, held_out, cfg.eval_frames, "--eval_frames")
    normalizer, unnormalizer = action_normalizers(train, parse_normalization_mode(cfg.normalization))
    gt = torch.cat([b[ACTION][:, : cfg.n_action_steps] for b in batches])
    gt_norm = _apply(normalizer, gt)
    frames = [{"episode": int(item["episode_index"]), "frame": int(item["frame_index"])} for item in items]
    guesses = {"range centre (normalised 0)": _apply(unnormalizer, torch.zeros_like(gt))}
    names = meta.features[ACTION].get("names")
    if "observation.state" in meta.features and meta.features["observation.state"].get("names") == names:
        state = torch.cat([b["observation.state"] for b in batches])
        guesses["hold current state"] = state[:, None].expand_as(gt)
    baselines = {
        name: {
            "mse_normalized": float((_apply(normalizer, guess) - gt_norm).pow(2).mean()),
            "mse_original": float((guess - gt).pow(2).mean()),
        }
        for name, guess in guesses.items()
    }
    per_dim_hold = None
    if HOLD in guesses:
        per_dim_hold = (_apply(normalizer, guesses[HOLD]) - gt_norm).pow(2).mean(dim=(0, 1)).tolist()
    confidence_batches, confidence_gt = [], None
    if cfg.confidence_frames and "pi05_ki" in cfg.policies:
        _, confidence_batches = held_out_batches(cfg, held_out, cfg.confidence_frames, "--confidence_frames")
        confidence_gt = _apply(normalizer, torch.cat([b[ACTION][:, : cfg.n_action_steps] for b in confidence_batches]))
    tasks = list(meta.tasks.index)
    return StudyData(
        train, batches, frames, train_episodes, eval_episodes, gt_norm, gt, tasks, baselines, per_dim_hold,
        confidence_batches, confidence_gt, normalizer, held_out,
    )  # fmt: skip


def held_out_batches(
    cfg: StudyConfig, held_out: LeRobotDataset, n_frames: int, flag: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``n_frames`` evenly spaced held-out frames whose first ``n_action_steps`` actions are real, in batches."""
    chosen = pick_frames(held_out, cfg.n_action_steps, n_frames)
    if len(chosen) < n_frames:
        raise ValueError(f"only {len(chosen)} held-out frames can be scored; lower {flag}.")
    items = [held_out[int(i)] for i in chosen]
    for item in items:
        if bool(item[f"{ACTION}_is_pad"][: cfg.n_action_steps].any()):
            raise RuntimeError("a scored held-out frame has padded actions; the frame selection is wrong.")
    camera_keys = list(held_out.meta.camera_keys)
    batches = [
        to_float_images(torch.utils.data.default_collate(items[i : i + cfg.eval_batch_size]), camera_keys)
        for i in range(0, len(items), cfg.eval_batch_size)
    ]
    return items, batches


def _apply(step: Any, actions: torch.Tensor) -> torch.Tensor:
    """LeRobot's (un)normaliser step on ``[N, T, D]`` actions."""
    return step(create_transition(action=actions.float()))[TransitionKey.ACTION].float()


def training_batches(cfg: StudyConfig, dataset: LeRobotDataset, seed: int) -> Iterator[dict[str, Any]]:
    """lerobot-train's data order: EpisodeAwareSampler, shuffled from the seed, cycled over epochs."""
    sampler = EpisodeAwareSampler(
        dataset.meta.episodes["dataset_from_index"],
        dataset.meta.episodes["dataset_to_index"],
        episode_indices_to_use=dataset.episodes,
        shuffle=True,
        seed=seed,
        absolute_to_relative_idx=dataset.absolute_to_relative_idx,
    )
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers, drop_last=False
    )
    while True:
        for batch in loader:
            yield to_float_images(batch, list(dataset.meta.camera_keys))


# ---------------------------------------------------------------------------------------------------- policies
@dataclass
class Trainee:
    """One trained policy with its processors, optimizer and private random stream."""

    name: str
    policy: PreTrainedPolicy
    pre: Any
    post: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    grad_clip: float
    rng: dict[str, Any]
    losses: list[dict[str, float]] = field(default_factory=list)
    update_s: list[float] = field(default_factory=list)
    update_cpu_s: list[float] = field(default_factory=list)
    preprocess_s: list[float] = field(default_factory=list)


def prompt_only_core_pi05(policy: PI05Policy) -> None:
    """Core pi05 without camera: no image tokens, as pi05_ki and pi0_fast (its ``_preprocess_images`` raises)."""
    policy._preprocess_images = lambda batch: ([], [])


def policy_features(meta: LeRobotDatasetMetadata, image_free: bool) -> tuple[dict, dict]:
    """Input / output features as LeRobot's make_policy derives them, optionally without cameras."""
    features = dataset_to_policy_features(meta.features)
    outputs = {k: f for k, f in features.items() if f.type is FeatureType.ACTION}
    inputs = {k: f for k, f in features.items() if k not in outputs}
    if image_free:
        inputs = {k: f for k, f in inputs.items() if f.type is not FeatureType.VISUAL}
    return inputs, outputs


def make_configs(cfg: StudyConfig, meta: LeRobotDatasetMetadata, text_dir: str, fast_dir: str) -> dict:
    mode = parse_normalization_mode(cfg.normalization)
    size = cfg.resolved_image_size()
    common = {
        "device": cfg.device,
        "dtype": cfg.dtype,
        "chunk_size": cfg.chunk_size,
        "n_action_steps": cfg.n_action_steps,
        "image_resolution": (size, size),
        "tokenizer_max_length": cfg.prompt_length,
        "paligemma_variant": cfg.paligemma_variant,
        "optimizer_lr": cfg.lr,
        "scheduler_decay_lr": cfg.lr / 10,
        "normalization_mapping": {"VISUAL": NormalizationMode.IDENTITY, "STATE": mode, "ACTION": mode},
        "use_relative_actions": cfg.relative_actions,
        "relative_exclude_joints": list(cfg.relative_exclude_joints),
    }
    layout = {"split_every": cfg.split_every, "max_action_tokens": MAX_ACTION_TOKENS}
    # core pi05's config accepts only the published variants; core_pi05_tiny builds the tiny sizes regardless
    core_variants = {"paligemma_variant": "gemma_2b", "action_expert_variant": "gemma_300m"}
    if cfg.paligemma_variant != TINY_VARIANT:
        core_variants = {"paligemma_variant": cfg.paligemma_variant, "action_expert_variant": cfg.action_expert_variant}
    configs = {
        "pi05": PI05Config(**{**common, **core_variants}),
        "pi05_ki": PI05KIConfig(
            **common,
            **layout,
            action_expert_variant=cfg.action_expert_variant,
            text_tokenizer_name=text_dir,
            fast_tokenizer_path=fast_dir,
        ),
        "pi0_fast": PI0FastConfig(
            **common,
            **layout,
            text_tokenizer_name=text_dir,
            action_tokenizer_name=fast_dir,
            action_layout="split",
        ),
    }
    inputs, outputs = policy_features(meta, cfg.image_free)
    names = meta.features[ACTION].get("names")
    for config in configs.values():
        config.input_features, config.output_features = dict(inputs), dict(outputs)
        config.action_feature_names = list(names) if isinstance(names, list) else None
    return configs


@contextmanager
def local_core_text_tokenizer(text_dir: str) -> Iterator[None]:
    """Core pi05's processor loads the gated PaliGemma tokenizer by hub id; point that id at ``text_dir``."""

    class Redirect:
        @staticmethod
        def from_pretrained(name: str, **kwargs: Any) -> Any:
            return AutoTokenizer.from_pretrained(text_dir if name == CORE_PI05_TEXT_TOKENIZER else name, **kwargs)

    with mock.patch.object(tokenizer_processor, "AutoTokenizer", Redirect):
        yield


def build_policies(cfg: StudyConfig, configs: dict, stats: dict, seed: int, text_dir: str) -> dict[str, Trainee]:
    """pi05_ki from the seed; core pi05 loads its whole state dict, pi0_fast its PaliGemma tensors."""
    set_seed(seed)
    reference = PI05KIPolicy(configs["pi05_ki"])
    weights = reference.state_dict()
    trainees = {}
    for name in cfg.policies:
        config = configs[name]
        if name == "pi05_ki":
            policy = reference
        elif name == "pi05":
            policy = (core_pi05_tiny if cfg.paligemma_variant == TINY_VARIANT else PI05Policy)(config)
            policy.load_state_dict(weights, strict=True)
            if not config.image_features:
                prompt_only_core_pi05(policy)
        else:
            policy = PI0FastPolicy(config)
            own = policy.state_dict()
            missing = sorted(own.keys() - weights.keys())
            if missing:
                raise RuntimeError(f"pi0_fast tensors absent from pi05_ki's state dict: {missing[:5]}")
            policy.load_state_dict({key: weights[key] for key in own}, strict=True)
        policy.to(cfg.device)
        with local_core_text_tokenizer(text_dir) if name == "pi05" else nullcontext():
            pre, post = make_pre_post_processors(config, dataset_stats=stats)
        optimizer = config.get_optimizer_preset().build(policy.get_optim_params())
        scheduler = config.get_scheduler_preset().build(optimizer, cfg.steps)
        with seeded_context(seed * 1000 + TRAINED.index(name) + 1):  # independent of which others run
            rng = get_rng_state()
        trainees[name] = Trainee(name, policy, pre, post, optimizer, scheduler, config.optimizer_grad_clip_norm, rng)
    return trainees


@contextmanager
def random_stream(trainee: Trainee) -> Iterator[None]:
    """Run with the trainee's own random state (noise and flow times come from torch's global generator)."""
    outer = get_rng_state()
    set_rng_state(trainee.rng)
    try:
        yield
    finally:
        trainee.rng = get_rng_state()
        set_rng_state(outer)


def train_step(trainee: Trainee, raw: dict[str, Any]) -> None:
    with random_stream(trainee):
        start = time.perf_counter()
        batch = trainee.pre(dict(raw))
        trainee.preprocess_s.append(time.perf_counter() - start)
        policy = trainee.policy
        policy.train()
        start, cpu = time.perf_counter(), time.process_time()
        loss, logs = policy.forward(batch)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), trainee.grad_clip)
        trainee.optimizer.step()
        trainee.optimizer.zero_grad(set_to_none=True)
        trainee.scheduler.step()
        if is_cuda(policy):
            torch.cuda.synchronize()
        trainee.update_s.append(time.perf_counter() - start)
        trainee.update_cpu_s.append(time.process_time() - cpu)
    scalars = {k: float(v) for k, v in logs.items() if isinstance(v, int | float)}  # core pi05 also logs lists
    trainee.losses.append({**scalars, "grad_norm": float(grad_norm)})


def is_cuda(policy: PreTrainedPolicy) -> bool:
    return str(policy.config.device).startswith("cuda")


# ---------------------------------------------------------------------------------------------------- evaluation
def second_difference_power(chunks: torch.Tensor) -> float:
    """``evaluate_offline.smoothness`` of ``[N, T, D]`` chunks; NaN for no chunk."""
    return smoothness(chunks.numpy()) if len(chunks) else float("nan")


def observation(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in batch.items() if not k.startswith(ACTION)}


def predict(trainee: Trainee, method: str, data: StudyData, batches: list[dict[str, Any]], n: int, seed: int) -> Tensor:
    """Absolute chunks ``[N, n, D]`` of one decoding on ``batches``, normalised with the dataset's statistics (same
    sampling noise for every method)."""
    policy, decoding = trainee.policy, EVALUATED[method][1]
    if decoding is not None:
        policy.config.action_decoding = decoding
    policy.eval()
    chunks = []
    with seeded_context(seed), torch.no_grad():
        for batch in batches:
            policy.reset()
            chunk = policy.predict_action_chunk(trainee.pre(observation(batch)))[:, :n]
            chunks.append(_apply(data.normalizer, trainee.post(chunk).float().cpu()))
    if decoding is not None:
        policy.config.action_decoding = "flow"
    return torch.cat(chunks)


def evaluate(cfg: StudyConfig, trainee: Trainee, method: str, data: StudyData, seed: int) -> tuple[dict, torch.Tensor]:
    """Score one policy (one decoding for pi05_ki) on the held-out frames, and its normalised predictions; see the
    module docstring."""
    policy, decoding = trainee.policy, EVALUATED[method][1]
    if decoding is not None:
        policy.config.action_decoding = decoding
    policy.eval()
    n, autoregressive = cfg.n_action_steps, method in AUTOREGRESSIVE
    normalized, original, decoded, failed, missing_subchunks, tokens, held_origin = [], [], [], 0, 0, [], 0
    start = time.perf_counter()
    with seeded_context(seed), torch.no_grad():  # the same sampling noise for every method and evaluation
        for batch in data.eval_batches:
            obs = trainee.pre(observation(batch))
            policy.reset()  # frames are independent: no action carried over from another frame
            chunk = policy.predict_action_chunk(obs)[:, :n]
            absolute = trainee.post(chunk).float().cpu()  # unnormalised (and made absolute again)
            original.append(absolute)
            normalized.append(_apply(data.normalizer, absolute))
            if autoregressive:
                report = policy.last_decode
                decoded.append(torch.from_numpy(report.parsed.step_valid[:, :n]))
                failed += report.n_incomplete
                missing_subchunks += int((~report.parsed.subchunk_valid).sum())
                tokens += report.lengths.tolist()
                held_origin += int(report.held_origin.sum())
        eval_s = time.perf_counter() - start
        first = data.eval_batches[0]
        count = min(cfg.latency_frames + 1, len(first[ACTION]))  # + 1 warm-up call
        singles = [trainee.pre(observation({k: v[i : i + 1] for k, v in first.items()})) for i in range(count)]
        latency = []
        for obs in singles:
            policy.reset()
            tic = time.perf_counter()
            policy.predict_action_chunk(obs)
            if is_cuda(policy):
                torch.cuda.synchronize()
            latency.append(time.perf_counter() - tic)
    if decoding is not None:
        policy.config.action_decoding = "flow"
    pred_norm, pred = torch.cat(normalized), torch.cat(original)
    result = {
        "mse_normalized": float((pred_norm - data.gt_normalized).pow(2).mean()),
        "mse_original": float((pred - data.gt_original).pow(2).mean()),
        "mse_normalized_per_step": (pred_norm - data.gt_normalized).pow(2).mean(dim=(0, 2)).tolist(),
        "smoothness_normalized": second_difference_power(pred_norm),
        "latency_s": statistics.median(latency[1:] or latency),
        "eval_s": eval_s,
    }
    result["mse_normalized_per_dim"] = (pred_norm - data.gt_normalized).pow(2).mean(dim=(0, 1)).tolist()
    if autoregressive:
        step_decoded = torch.cat(decoded)
        error = (pred_norm - data.gt_normalized).pow(2).mean(dim=2)[step_decoded]
        result.update(
            # MSE over the steps the decoder produced (failed steps hold a neighbour or the range centre)
            mse_normalized_decoded=float(error.mean()) if error.numel() else float("nan"),
            decoded_step_share=float(step_decoded.float().mean()),
            # held steps are flat, so smoothness over the completely decoded chunks only
            smoothness_normalized_decoded=second_difference_power(pred_norm[step_decoded.all(dim=1)]),
            decode_failures=failed,
            decode_failure_rate=failed / len(pred),
            missing_subchunks=missing_subchunks,
            tokens_per_chunk=float(np.mean(tokens)),
        )
        if trainee.name == "pi0_fast":
            result["held_origin"] = held_origin
    return result, pred_norm


# ---------------------------------------------------------------------------------------------------- report
def machine_info() -> dict[str, Any]:
    cpu = platform.processor()
    with suppress(OSError, StopIteration), open("/proc/cpuinfo") as info:
        cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True).stdout
    except OSError:
        commit = ""
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "lerobot": lerobot.__version__,
        "transformers": transformers.__version__,
        "git_commit": commit.strip(),
    }


# ---------------------------------------------------------------------------------------------------- main
def run_seed(cfg: StudyConfig, seed: int, configs: dict, data: StudyData, text_dir: str, stats: dict) -> dict:
    trainees = build_policies(cfg, configs, stats, seed, text_dir)
    logger.info("seed %d: built %s", seed, ", ".join(trainees))
    first = next(iter(trainees.values()))
    prompt = first.pre(observation(data.eval_batches[0]))["observation.language.attention_mask"].sum(dim=1).max()
    if int(prompt) >= cfg.prompt_length:
        raise ValueError(f"prompts fill all --prompt_length={cfg.prompt_length} tokens (cut short); raise it.")
    methods = [m for m, (trained, _) in EVALUATED.items() if trained in trainees]
    evals: dict[str, list[dict]] = {m: [] for m in methods}
    eval_steps = sorted({0, cfg.steps, *range(cfg.eval_every, cfg.steps, cfg.eval_every)})
    batches = training_batches(cfg, data.train, seed)
    data_s: list[float] = []
    loop_start = time.perf_counter()
    final: dict[str, Any] = {"per_dim_mse": {}}
    for step in range(cfg.steps + 1):
        if step in eval_steps:
            for method in methods:
                scores, _ = evaluate(cfg, trainees[EVALUATED[method][0]], method, data, seed)
                result = {"step": step, **scores}
                evals[method].append(result)
                if step == cfg.steps:
                    final["per_dim_mse"][method] = result["mse_normalized_per_dim"]
                logger.info(
                    "seed %d step %d %s: %s",
                    seed,
                    step,
                    method,
                    {k: round(v, 5) for k, v in result.items() if isinstance(v, float)},
                )
        if step == cfg.steps:
            if data.confidence_batches:
                final["confidence"] = confidence_samples(cfg, trainees["pi05_ki"], data, seed)
            break
        start = time.perf_counter()
        raw = next(batches)
        data_s.append(time.perf_counter() - start)
        for trainee in trainees.values():
            train_step(trainee, raw)
        if (step + 1) % 20 == 0:
            logger.info(
                "seed %d step %d: %s", seed, step + 1, {n: round(t.losses[-1]["loss"], 4) for n, t in trainees.items()}
            )
    train = {
        name: {
            "losses": t.losses,
            "update_s": t.update_s,
            "update_s_median": statistics.median(t.update_s),
            "update_cpu_s_median": statistics.median(t.update_cpu_s),
            "preprocess_s_median": statistics.median(t.preprocess_s),
            "parameters": sum(p.numel() for p in t.policy.parameters()),
        }
        for name, t in trainees.items()
    }
    return {
        "seed": seed,
        "evals": evals,
        "final": final,
        "train": train,
        "data_s_median": statistics.median(data_s),
        "loop_s": time.perf_counter() - loop_start,  # training + evaluations of this seed, wall-clock
        "eval_s_total": sum(e["eval_s"] for method in evals.values() for e in method),
    }


def policy_stats_and_fast_windows(
    cfg: StudyConfig, train: LeRobotDataset, mode: NormalizationMode
) -> tuple[dict, ActionChunks]:
    """The statistics the policies normalise with, and the normalised windows the FAST tokenizer is fitted on.

    Absolute actions: the dataset's ``meta/stats.json`` and ``split_every``-step windows. Relative actions: the
    action statistics of every training chunk relative to its first frame's state (what ``lerobot-edit-dataset
    ... --operation.relative_action=true`` would write) and the sub-chunks of those chunks, normalised with them."""
    if not cfg.relative_actions:
        return train.meta.stats, load_action_chunks(train, cfg.split_every, mode=mode, show_progress=False)
    chunks = policy_chunks(cfg, train, None, mode)
    flat = chunks.raw.reshape(-1, chunks.action_dim)
    relative = {k: np.asarray(v, dtype=np.float32) for k, v in get_feature_stats(flat, axis=0, keepdims=False).items()}
    stats = {**train.meta.stats, ACTION: {**relative, "count": np.array([len(flat)])}}
    return stats, split_into_subchunks(policy_chunks(cfg, train, stats, mode), cfg.split_every)


def policy_chunks(cfg: StudyConfig, dataset: LeRobotDataset, stats: dict | None, mode: NormalizationMode) -> Any:
    """Every ``chunk_size``-step window (relative to its first frame's state with relative actions), normalised with
    ``stats`` (raw only when None): the action chunks the policies' FAST steps tokenize."""
    exclude = list(cfg.relative_exclude_joints) if cfg.relative_actions else None
    chunks = load_action_chunks(
        dataset, cfg.chunk_size, mode=NormalizationMode.IDENTITY, show_progress=False, relative_exclude_joints=exclude
    )
    if stats is None:
        return chunks
    features = {ACTION: PolicyFeature(type=FeatureType.ACTION, shape=(chunks.action_dim,))}
    normalizer = NormalizerProcessorStep(features=features, norm_map={FeatureType.ACTION: mode}, stats=stats)
    return replace(chunks, normalized=apply_action_step(normalizer, chunks.raw), mode=mode)


def confidence_samples(cfg: StudyConfig, trainee: Trainee, data: StudyData, seed: int) -> dict[str, Any]:
    """Per held-out chunk: the flow decode's MSE against the recording and its disagreement (MSE) with the FAST
    head's decode of the same observation, and their Spearman correlation."""
    n = cfg.n_action_steps
    flow = predict(trainee, "pi05_ki/flow", data, data.confidence_batches, n, seed)
    fast = predict(trainee, "pi05_ki/fast", data, data.confidence_batches, n, seed)
    flow_error = (flow - data.confidence_gt_normalized).pow(2).mean(dim=(1, 2))
    disagreement = (fast - flow).pow(2).mean(dim=(1, 2))
    return {
        "flow_error": flow_error.tolist(),
        "fast_error": (fast - data.confidence_gt_normalized).pow(2).mean(dim=(1, 2)).tolist(),
        "disagreement": disagreement.tolist(),
        **spearman_with_ci(disagreement.numpy(), flow_error.numpy(), seed=seed),
    }


def study(cfg: StudyConfig) -> dict:
    cfg.validate()
    root = cfg.dataset_root()
    if not (root / "meta" / "info.json").is_file():
        raise ValueError(f"{root} is not a local LeRobotDataset (no meta/info.json); pass --root=<dataset folder>.")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(True)
    for noisy in (
        "lerobot_fastplus.policies.pi05_ki.modeling_pi05_ki",
        "lerobot_fastplus.policies.pi0_fast.modeling_pi0_fast",
    ):
        logging.getLogger(noisy).setLevel(logging.ERROR)  # decode failures are counted, not logged per batch
    started, load_before = time.time(), os.getloadavg()
    meta = LeRobotDatasetMetadata(cfg.dataset_repo_id(), root=root)
    mode = parse_normalization_mode(cfg.normalization)
    with tempfile.TemporaryDirectory(prefix="learning_study_") as tmp:
        probe = PI05Config(chunk_size=cfg.chunk_size, n_action_steps=cfg.n_action_steps)
        data = load_data(cfg, probe, meta)
        logger.info(
            "data: %d training frames (episodes %s), %d held-out frames scored (episodes %s)",
            len(data.train),
            data.train_episodes,
            len(data.gt_original),
            data.eval_episodes,
        )
        stats, windows = policy_stats_and_fast_windows(cfg, data.train, mode)
        if set(np.unique(windows.episode_index)) != set(data.train_episodes):
            raise RuntimeError("the FAST tokenizer would not be fitted on exactly the training episodes.")
        fast = FastTokenizer.fit(windows.normalized, vocab_size=cfg.vocab_size)
        logger.info("FAST tokenizer fitted on %d windows of %d steps", len(windows.normalized), cfg.split_every)
        fast_dir = str(fast.save(Path(tmp) / "fast"))
        held_out_chunks = policy_chunks(cfg, data.held_out, stats, mode)
        layout = SplitLayout(fast, cfg.chunk_size, cfg.split_every)
        layout_tokens = layout.lengths(held_out_chunks.normalized, clip=True)
        words = sorted({w for task in data.tasks for w in re.findall(r"\w+|[^\w\s]+", task.replace("_", " "))})
        text_dir = cfg.text_tokenizer or str(write_paligemma_layout_tokenizer(Path(tmp) / "text", words))
        configs = make_configs(cfg, meta, text_dir, fast_dir)
        patched = []
        if not configs["pi05"].image_features and "pi05" in cfg.policies:
            if cfg.patch_core_pi05_without_camera:
                patched = ["pi05"]
                logger.info("no camera: core pi05 runs on a prompt-only prefix (patched, as pi05_ki and pi0_fast)")
            else:
                cfg = replace(cfg, policies=[name for name in cfg.policies if name != "pi05"])
                logger.info("no camera: core pi05 refuses such a config and is left out")
                if not cfg.policies:
                    raise ValueError("no policy left to train; pass --patch_core_pi05_without_camera=true.")
        runs = [run_seed(cfg, seed, configs, data, text_dir, stats) for seed in cfg.seeds]
    methods = list(runs[0]["evals"])
    settings = {
        **portable(asdict(cfg)),
        "resolved_image_size": cfg.resolved_image_size(),
        "max_action_tokens": MAX_ACTION_TOKENS,
        "max_decoding_steps": "the exact grammar's bound",
        "prompt_only_patch_applied_to": patched,
    }
    result = {
        "settings": settings,
        "machine": {
            **machine_info(),
            "load_average_start": load_before,
            "load_average_end": os.getloadavg(),
            "wall_s": time.time() - started,
        },
        "data": {
            "train_episodes": data.train_episodes,
            "eval_episodes": data.eval_episodes,
            "train_frames": len(data.train),
            "eval_frames": data.eval_frames,
            "cameras": [] if cfg.image_free else list(meta.camera_keys),
            "action_dim": int(data.gt_original.shape[-1]),
            "normalization": mode.value,
            "fast_tokenizer": {
                "vocab_size": cfg.vocab_size,
                "fitted_on_windows": len(windows.normalized),
                "horizon": cfg.split_every,
                "normalized_range": [float(windows.normalized.min()), float(windows.normalized.max())],
                # split-layout sequence length (BOS to EOS) of every held-out chunk_size window, as recorded
                "held_out_tokens_per_chunk": float(layout_tokens.mean()),
                "held_out_chunks": len(layout_tokens),
            },
            "gt_smoothness_normalized": second_difference_power(data.gt_normalized),
            "gt_smoothness_original": second_difference_power(data.gt_original),
            "baselines": data.baselines,
            "per_dim_hold_mse": data.per_dim_hold_mse,
            "confidence_frames": len(data.confidence_gt_normalized) if data.confidence_batches else 0,
        },
        "methods": methods,
        "runs": runs,
    }
    return add_derived(result)


def add_derived(result: dict) -> dict:
    """Summary over seeds, paired comparisons and the confidence correlation, all from ``result["runs"]``."""
    runs, methods = result["runs"], result["methods"]
    result["summary"] = summarize(runs, methods, result["data"]["baselines"])
    result["comparisons"] = {
        f"{a} vs {b}": row
        for a, b in (("pi05_ki/flow", "pi05"), ("pi05_ki/fast", "pi0_fast"))
        if (row := compare(runs, a, b)) is not None
    }
    if all("confidence" in run["final"] for run in runs):
        samples = [
            (run["final"]["confidence"]["disagreement"], run["final"]["confidence"]["flow_error"]) for run in runs
        ]
        result["confidence"] = {
            "per_seed": [{k: run["final"]["confidence"][k] for k in ("rho", "ci_low", "ci_high", "n")} for run in runs],
            "mean_per_seed": mean_within_group_spearman(samples),
        }
    return result


def portable(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings without machine-specific paths: the dataset by its folder name, no output folder."""
    out = {k: v for k, v in settings.items() if k != "output_dir"}
    if out.get("root"):
        out["root"] = Path(out["root"]).name
    return out


def machines_of(part: dict) -> list[dict]:
    """The machine of each process behind a result (an already merged result lists its parts')."""
    machine = part["machine"]
    return machine.get("per_part") or [machine]


def merge_results(paths: list[str]) -> dict:
    """One result from JSONs of this script that differ only in seeds, threads, notes and machine; a part may itself
    be a merged result, so a seed added later joins the committed ones."""
    parts = [json.loads(Path(path).read_text()) for path in paths]
    for part in parts:
        part["settings"] = portable(part["settings"])
    free = {"seeds", "threads", "note", "name", "output_dir", "merge", "merged_from"}
    first = {k: v for k, v in parts[0]["settings"].items() if k not in free}
    for path, part in zip(paths, parts, strict=True):
        other = {k: v for k, v in part["settings"].items() if k not in free}
        if other != first or part["data"]["eval_frames"] != parts[0]["data"]["eval_frames"]:
            diff = sorted(k for k in first.keys() | other.keys() if first.get(k) != other.get(k))
            raise ValueError(f"{path} was run with other settings than {paths[0]} ({diff or 'eval frames'}).")
    runs = sorted((run for part in parts for run in part["runs"]), key=lambda run: run["seed"])
    seeds = [run["seed"] for run in runs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds {seeds} repeat across {paths}.")
    merged_from = [
        name
        for path, part in zip(paths, parts, strict=True)
        for name in part["settings"].get("merged_from", [Path(path).name])
    ]
    merged = {
        **parts[0],
        "settings": {**parts[0]["settings"], "seeds": seeds, "merged_from": merged_from},
        "machine": {**parts[0]["machine"], "per_part": [m for part in parts for m in machines_of(part)]},
        "runs": runs,
    }
    return add_derived(merged)


def main_study(cfg: StudyConfig) -> dict:
    # LeRobot configures the root logger at WARNING on import; progress lines of this study go to stderr
    logger.setLevel(logging.INFO)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
        logger.addHandler(handler)
        logger.propagate = False
    result = merge_results(cfg.merge) if cfg.merge else study(cfg)
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = cfg.name or f"learning_study_{cfg.dataset_root().name}"
    json_path, png_path = out_dir / f"{stem}.json", out_dir / f"{stem}.png"
    json_path.write_text(json.dumps(result, indent=1))
    plot(result, png_path)
    table = format_table(result)
    print(table)
    m = result["machine"]
    print(
        f"{m['cpu']} x{m['cpu_count']}, {m['torch_threads']} threads, load {m['load_average_start'][0]:.2f} -> "
        f"{m['load_average_end'][0]:.2f}; total {m['wall_s'] / 60:.1f} min\n{json_path}\n{png_path}"
    )
    return result


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return run_cli(StudyConfig, main_study, argv)


if __name__ == "__main__":
    sys.exit(main())
