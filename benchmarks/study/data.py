"""The learning study's data, on LeRobot's training path: the episode split, the training batches in
``lerobot-train``'s order, the scored held-out frames with their trivial baselines, and the statistics and windows
the FAST tokenizer is fitted on."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from lerobot.configs import FeatureType, NormalizationMode, PolicyFeature, PreTrainedConfig
from lerobot.datasets import EpisodeAwareSampler, LeRobotDataset, LeRobotDatasetMetadata
from lerobot.datasets.compute_stats import get_feature_stats
from lerobot.datasets.factory import resolve_delta_timestamps
from lerobot.processor import NormalizerProcessorStep, TransitionKey, create_transition
from lerobot.utils.constants import ACTION

from lerobot_fastplus.data.chunks import (
    ActionChunks,
    action_normalizers,
    apply_action_step,
    load_action_chunks,
    parse_normalization_mode,
    split_into_subchunks,
)
from lerobot_fastplus.evaluation.offline import pick_frames
from study.config import StudyConfig
from study.stats import CENTRE, HOLD


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
    gt_norm = apply_step(normalizer, gt)
    frames = [{"episode": int(item["episode_index"]), "frame": int(item["frame_index"])} for item in items]
    guesses = {CENTRE: apply_step(unnormalizer, torch.zeros_like(gt))}
    names = meta.features[ACTION].get("names")
    if "observation.state" in meta.features and meta.features["observation.state"].get("names") == names:
        state = torch.cat([b["observation.state"] for b in batches])
        guesses["hold current state"] = state[:, None].expand_as(gt)
    baselines = {
        name: {
            "mse_normalized": float((apply_step(normalizer, guess) - gt_norm).pow(2).mean()),
            "mse_original": float((guess - gt).pow(2).mean()),
        }
        for name, guess in guesses.items()
    }
    per_dim_hold = None
    if HOLD in guesses:
        per_dim_hold = (apply_step(normalizer, guesses[HOLD]) - gt_norm).pow(2).mean(dim=(0, 1)).tolist()
    confidence_batches, confidence_gt = [], None
    if cfg.confidence_frames and "pi05_ki" in cfg.policies:
        _, confidence_batches = held_out_batches(cfg, held_out, cfg.confidence_frames, "--confidence_frames")
        confidence_gt = apply_step(
            normalizer, torch.cat([b[ACTION][:, : cfg.n_action_steps] for b in confidence_batches])
        )
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


def apply_step(step: Any, actions: torch.Tensor) -> torch.Tensor:
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
