"""Held-out action error of a trained checkpoint on a local LeRobotDataset (what ``fastplus-eval-offline`` and
``fastplus-demo`` report).

The checkpoint is loaded the way ``lerobot-eval`` and ``lerobot-rollout`` load it (``make_policy`` and the
checkpoint's own processor JSONs). For evenly spaced frames of the chosen (held-out) episodes, the policy
predicts a chunk from the recorded observation; the first ``n_action_steps`` actions are compared with the
recorded ones. Every decoding the policy has is run on the same frames: flow sampling and its autoregressive
FAST head for ``pi05_ki``, autoregressive decoding for ``pi0_fast``, flow for LeRobot's ``pi05``. When state
and action name the same joints, "hold the current state" is reported as a baseline a useful policy must beat,
and "range centre" (predicting 0 in normalised space) always is. ``save_result`` writes ``eval_offline.json`` and
``eval_offline.png`` (held-out chunks against predictions).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lerobot.configs import NormalizationMode, PreTrainedConfig
from lerobot.configs.types import FeatureType
from lerobot.datasets import LeRobotDataset
from lerobot.policies import make_policy, make_pre_post_processors
from lerobot.utils.constants import ACTION, OBS_STATE
from tqdm.auto import tqdm

from lerobot_fastplus.data.chunks import action_normalizers, apply_action_step, open_dataset
from lerobot_fastplus.evaluation.offline_config import EvalOfflineConfig

# the two baselines' decoding names
HOLD, CENTRE = "hold current state", "range centre"
PLOT_FRAMES = 3
PLOT_DIMS = 3
# decodings of each policy type: (name, value of config.action_decoding or None when the type has one)
DECODINGS = {
    "pi05_ki": (("flow", "flow"), ("fast (AR)", "fast")),
    "pi0_fast": (("fast (AR)", None),),
}


@dataclass
class DecodingResult:
    name: str
    mse_normalized: float
    mse_original: float
    max_abs_error_original: float
    smoothness_normalized: float  # mean squared second difference along time of the predicted chunks
    ms_per_chunk: float | None
    incomplete_chunks: int | None  # autoregressive decodings: chunks with steps that did not decode
    predictions: np.ndarray = field(repr=False)  # [N, n_action_steps, D], original units


@dataclass
class OfflineEvalResult:
    policy_type: str
    checkpoint: str
    dataset: str
    episodes: list[int]
    frames: list[int]
    n_action_steps: int
    normalization_mode: str
    ground_truth_smoothness_normalized: float
    action_names: list[str] | None
    decodings: list[DecodingResult]
    ground_truth: np.ndarray = field(repr=False)
    json_path: Path | None = None
    png_path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("decodings", "ground_truth", "json_path", "png_path")}
        out["decodings"] = [{k: v for k, v in asdict(d).items() if k != "predictions"} for d in self.decodings]
        return out

    def result(self, name: str) -> DecodingResult:
        return next(d for d in self.decodings if d.name == name)


def _mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a - b) ** 2))


def smoothness(chunks: np.ndarray) -> float:
    """Mean squared second difference along time of ``[N, T, D]`` chunks."""
    return float(np.mean(np.diff(chunks, n=2, axis=1) ** 2)) if chunks.shape[1] > 2 else 0.0


def pick_frames(dataset: LeRobotDataset, horizon: int, n_frames: int) -> list[int]:
    """Evenly spaced dataset indices whose next ``horizon`` actions lie inside their episode."""
    table = dataset.hf_dataset.data
    episode = table.column("episode_index").to_numpy()
    frame = table.column("frame_index").to_numpy()
    lengths = dict(zip(dataset.meta.episodes["episode_index"], dataset.meta.episodes["length"], strict=True))
    valid = np.flatnonzero(frame + horizon <= np.array([lengths[int(e)] for e in episode]))
    if len(valid) == 0:
        raise ValueError(f"no episode of {dataset.root} holds {horizon} actions; evaluate other episodes.")
    picks = np.unique(np.round(np.linspace(0, len(valid) - 1, min(n_frames, len(valid)))).astype(int))
    return [int(i) for i in valid[picks]]


def _batch(frame: dict[str, Any]) -> dict[str, Any]:
    obs = {k: v.unsqueeze(0) for k, v in frame.items() if k.startswith("observation.") and torch.is_tensor(v)}
    obs["task"] = [frame["task"]]
    return obs


def _predict(policy: Any, pre: Any, post: Any, frames: list[dict[str, Any]], n_steps: int, seed: int, desc: str):
    """Predicted chunks in original units ``[N, n_steps, D]``, median ms per chunk, incomplete AR chunks (counted
    here, so the policies' per-chunk warnings are silenced meanwhile)."""
    plugin_logger = logging.getLogger("lerobot_fastplus")
    level = plugin_logger.level
    plugin_logger.setLevel(logging.ERROR)
    try:
        return _predict_chunks(policy, pre, post, frames, n_steps, seed, desc)
    finally:
        plugin_logger.setLevel(level)


def _predict_chunks(policy: Any, pre: Any, post: Any, frames: list[dict[str, Any]], n_steps: int, seed: int, desc: str):
    torch.manual_seed(seed)
    chunks, times, incomplete = [], [], 0
    for frame in tqdm(frames, desc=desc, disable=None, leave=False):
        batch = pre(_batch(frame))
        policy.reset()
        start = time.perf_counter()
        chunk = policy.predict_action_chunk(batch)[:, :n_steps]
        times.append(time.perf_counter() - start)
        chunks.append(post(chunk).detach().cpu().numpy().astype(np.float64)[0])
        report = getattr(policy, "last_decode", None)
        if report is not None:
            incomplete += int(np.count_nonzero(np.asarray(report.missing_steps) > 0))
            policy.last_decode = None
    return np.stack(chunks), 1e3 * float(np.median(times)), incomplete


def range_centre_chunks(pre: Any, post: Any, frames: list[dict[str, Any]], n_steps: int, dim: int) -> np.ndarray:
    """What a policy that predicts 0 in its normalised action space executes (``[N, n_steps, D]``, original units):
    the centre of the action range, or, with relative actions, the current state plus the centre offset."""
    chunks = []
    for frame in frames:
        pre(_batch(frame))  # caches the state for relative actions
        chunks.append(post(torch.zeros(1, n_steps, dim)).detach().cpu().numpy().astype(np.float64)[0])
    return np.stack(chunks)


def evaluate_checkpoint(cfg: EvalOfflineConfig) -> OfflineEvalResult:
    cfg.validate()
    policy_cfg = PreTrainedConfig.from_pretrained(cfg.checkpoint)
    policy_cfg.pretrained_path = cfg.checkpoint
    if cfg.device is not None:
        policy_cfg.device = cfg.device
    root = Path(cfg.root)
    probe = open_dataset(root, cfg.repo_id or f"local/{root.name}", cfg.episodes)
    n_steps = policy_cfg.n_action_steps
    dataset = LeRobotDataset(
        probe.repo_id,
        root=root,
        episodes=cfg.episodes,
        delta_timestamps={ACTION: [i / probe.fps for i in range(n_steps)]},
        video_backend="pyav",
    )
    frames = pick_frames(dataset, n_steps, cfg.n_frames)
    samples = [dataset[i] for i in frames]
    truth = np.stack([s[ACTION].numpy() for s in samples]).astype(np.float64)

    policy = make_policy(policy_cfg, ds_meta=dataset.meta)
    policy.eval()
    pre, post = make_pre_post_processors(policy_cfg, pretrained_path=cfg.checkpoint)
    mode = NormalizationMode(policy_cfg.normalization_mapping[FeatureType.ACTION.value])
    normalizer, _ = action_normalizers(dataset, mode)
    truth_norm = apply_action_step(normalizer, truth)

    def scored(name: str, pred: np.ndarray, ms: float | None, incomplete: int | None) -> DecodingResult:
        pred_norm = apply_action_step(normalizer, pred)
        return DecodingResult(
            name=name,
            mse_normalized=_mse(pred_norm, truth_norm),
            mse_original=_mse(pred, truth),
            max_abs_error_original=float(np.abs(pred - truth).max()),
            smoothness_normalized=smoothness(pred_norm),
            ms_per_chunk=ms,
            incomplete_chunks=incomplete,
            predictions=pred,
        )

    results = []
    autoregressive = {"fast (AR)"}
    for name, decoding in DECODINGS.get(policy_cfg.type, ((policy_cfg.type, None),)):
        if decoding is not None:
            policy.config.action_decoding = decoding
        pred, ms, incomplete = _predict(policy, pre, post, samples, n_steps, cfg.seed, f"{name} on held-out frames")
        results.append(scored(name, pred, ms, incomplete if name in autoregressive else None))
    state = dataset.meta.features.get(OBS_STATE, {})
    if state.get("names") and state.get("names") == dataset.meta.features[ACTION].get("names"):
        held = np.stack([s[OBS_STATE].numpy() for s in samples]).astype(np.float64)
        results.append(scored(HOLD, np.repeat(held[:, None], n_steps, axis=1), None, None))
    centre = range_centre_chunks(pre, post, samples, n_steps, truth.shape[-1])
    results.append(scored(CENTRE, centre, None, None))

    return OfflineEvalResult(
        policy_type=policy_cfg.type,
        checkpoint=str(cfg.checkpoint),
        dataset=str(root),
        episodes=sorted({int(s["episode_index"]) for s in samples}),
        frames=frames,
        n_action_steps=n_steps,
        normalization_mode=mode.value,
        ground_truth_smoothness_normalized=smoothness(truth_norm),
        action_names=names if isinstance(names := dataset.meta.features[ACTION].get("names"), list) else None,
        decodings=results,
        ground_truth=truth,
    )


def format_result(result: OfflineEvalResult) -> str:
    header = ("decoding", "MSE normalised", "MSE original", "max |err| orig.", "smoothness", "ms/chunk", "incomplete")
    rows = [header]
    for d in result.decodings:
        rows.append(
            (
                d.name,
                f"{d.mse_normalized:.4f}",
                f"{d.mse_original:.3f}",
                f"{d.max_abs_error_original:.2f}",
                f"{d.smoothness_normalized:.2e}",
                "-" if d.ms_per_chunk is None else f"{d.ms_per_chunk:.1f}",
                "-" if d.incomplete_chunks is None else f"{d.incomplete_chunks}/{len(result.frames)}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(
        f"({len(result.frames)} held-out frames of episodes {result.episodes}, first {result.n_action_steps} actions "
        f"of each chunk; {result.normalization_mode} units for 'normalised'; recorded chunks' smoothness "
        f"{result.ground_truth_smoothness_normalized:.2e})"
    )
    return "\n".join(lines)


def plot_result(result: OfflineEvalResult, path: str | Path) -> Path:
    """One row per decoding, one column per held-out frame: recorded chunk (solid) against the prediction (dashed),
    with "hold the current state" (dotted) when it was scored. The same ``PLOT_DIMS`` action dimensions in every panel
    (those that move most over the plotted recorded chunks; the title says which share of them that is), one legend
    under the panels, each decoding's MSE next to its row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    truth, names = result.ground_truth, result.action_names
    predicted = [d for d in result.decodings if d.ms_per_chunk is not None]
    hold = next((d for d in result.decodings if d.name == HOLD), None)
    picks = np.unique(np.round(np.linspace(0, len(truth) - 1, min(PLOT_FRAMES, len(truth)))).astype(int))
    n_dims = truth.shape[-1]
    dims = np.argsort(-np.ptp(truth[picks], axis=1).max(axis=0))[:PLOT_DIMS]
    labels = [names[d] if names and d < len(names) else f"dim {d}" for d in dims]
    fig, axes = plt.subplots(
        len(predicted), len(picks), figsize=(4.5 * len(picks), 3.0 * len(predicted) + 1.2), squeeze=False, sharex=True
    )
    steps = np.arange(truth.shape[1])
    for row, decoding in zip(axes, predicted, strict=True):
        for ax, i in zip(row, picks, strict=True):
            for colour, d in enumerate(dims):
                ax.plot(steps, truth[i, :, d], "-o", color=f"C{colour}", markersize=3)
                ax.plot(steps, decoding.predictions[i, :, d], "--", color=f"C{colour}")
                if hold is not None:
                    ax.plot(steps, hold.predictions[i, :, d], ":", color=f"C{colour}", alpha=0.6)
            ax.set_title(f"{decoding.name}, held-out frame {result.frames[i]}", fontsize=9)
        row[0].set_ylabel(f"{decoding.name}: MSE {decoding.mse_normalized:.3f}\naction (original units)", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("step")
    handles = [Line2D([], [], color=f"C{c}", lw=2, label=label) for c, label in enumerate(labels)]
    handles += [
        Line2D([], [], color="k", ls="-", marker="o", markersize=3, label="recorded"),
        Line2D([], [], color="k", ls="--", label="predicted"),
    ]
    if hold is not None:
        handles.append(Line2D([], [], color="k", ls=":", alpha=0.6, label="hold the current state"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    shown = (
        f"all {n_dims} action dimensions"
        if len(dims) == n_dims
        else f"{len(dims)} of {n_dims} action dimensions (those moving most)"
    )
    fig.suptitle(
        f"{result.policy_type} on held-out episodes: recorded vs predicted chunks, {shown}\n"
        f"MSE: normalised, over all {len(result.frames)} held-out frames and all {n_dims} action dimensions",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def save_result(result: OfflineEvalResult, directory: str | Path) -> OfflineEvalResult:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    result.json_path = directory / "eval_offline.json"
    result.json_path.write_text(json.dumps(result.to_dict(), indent=2))
    result.png_path = plot_result(result, directory / "eval_offline.png")
    return result
