"""Scoring the learning study's policies on the held-out frames (see ``learning_study.py``'s docstring for what is
measured), and pi05_ki's flow-vs-FAST-head disagreement as a confidence signal."""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np
import torch
from lerobot.utils.constants import ACTION
from lerobot.utils.random_utils import seeded_context
from torch import Tensor

from lerobot_fastplus.evaluation.offline import smoothness
from study.config import AUTOREGRESSIVE, EVALUATED, StudyConfig
from study.data import StudyData, apply_step
from study.stats import spearman_with_ci
from study.training import Trainee, is_cuda


def second_difference_power(chunks: torch.Tensor) -> float:
    """``lerobot_fastplus.evaluation.offline.smoothness`` of ``[N, T, D]`` chunks; NaN for no chunk."""
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
            chunks.append(apply_step(data.normalizer, trainee.post(chunk).float().cpu()))
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
            normalized.append(apply_step(data.normalizer, absolute))
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
