"""Action chunks ``[N, H, D]`` from a local LeRobotDataset, normalised exactly as a policy sees them.

Only the tabular ``action`` column is read (from the dataset's Arrow table; no image or video is
decoded). Windows never cross an episode boundary. Normalisation uses LeRobot's own
``NormalizerProcessorStep`` with the dataset's ``meta/stats.json``, the statistics ``lerobot-train``
gives a policy, so the tokenizer is fitted and checked on the values the policy will emit.
Note that LeRobot's normaliser does not clip: under QUANTILES, values beyond q01/q99 map outside
[-1, 1] (LeRobot's own ``lerobot-train-tokenizer`` clips them, which a policy never does).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from lerobot.configs import FeatureType, NormalizationMode, PolicyFeature
from lerobot.datasets import LeRobotDataset
from lerobot.processor import (
    NormalizerProcessorStep,
    RelativeActionsProcessorStep,
    TransitionKey,
    UnnormalizerProcessorStep,
    create_transition,
)
from lerobot.utils.constants import ACTION, OBS_STATE
from numpy.lib.stride_tricks import sliding_window_view
from tqdm.auto import tqdm

from lerobot_fastplus.data.chunk_source import ChunkSourceConfig

REQUIRED_STATS = {
    NormalizationMode.MEAN_STD: ("mean", "std"),
    NormalizationMode.MIN_MAX: ("min", "max"),
    NormalizationMode.QUANTILES: ("q01", "q99"),
    NormalizationMode.QUANTILE10: ("q10", "q90"),
    NormalizationMode.IDENTITY: (),
}
# A normalised value counts as "far outside" [-1, 1] beyond this magnitude (MEAN_STD is unbounded by
# design, so there only beyond 4 standard deviations) ...
FAR_OUTSIDE = 2.0
FAR_OUTSIDE_MEAN_STD = 4.0
# ... and a dimension gets a warning when more than this share of its values are.
FAR_SHARE_WARNING = 0.01


@dataclass
class ActionChunks:
    """Action chunks of one dataset, in original units and normalised, with their origin."""

    raw: np.ndarray
    normalized: np.ndarray
    episode_index: np.ndarray
    start_frame: np.ndarray
    mode: NormalizationMode
    names: list[str] | None
    dataset: str
    repo_id: str
    unnormalizer: UnnormalizerProcessorStep = field(repr=False)
    # None: absolute actions; a list: relative to the state at each chunk's first frame except these joints.
    relative_exclude_joints: list[str] | None = None

    @property
    def horizon(self) -> int:
        return self.raw.shape[1]

    @property
    def action_dim(self) -> int:
        return self.raw.shape[2]

    def unnormalize(self, normalized: np.ndarray) -> np.ndarray:
        """Back to original units with LeRobot's ``UnnormalizerProcessorStep`` (what a policy's output sees)."""
        return apply_action_step(self.unnormalizer, normalized)

    def dim_name(self, d: int) -> str:
        return f"{d} ({self.names[d]})" if self.names and d < len(self.names) else str(d)


@dataclass(frozen=True)
class RangeSummary:
    """Where the normalised values lie; FAST expects about [-1, 1]."""

    low: float
    high: float
    dim_low: list[float]
    dim_high: list[float]
    far_share: list[float]
    far_threshold: float

    @property
    def far_share_total(self) -> float:
        return float(np.mean(self.far_share))

    def flagged_dims(self) -> list[int]:
        return [d for d, share in enumerate(self.far_share) if share > FAR_SHARE_WARNING]


def parse_normalization_mode(value: str | NormalizationMode) -> NormalizationMode:
    try:
        return NormalizationMode(str(getattr(value, "value", value)).upper())
    except ValueError:
        valid = ", ".join(m.value for m in NormalizationMode)
        raise ValueError(f"unknown normalization_mode '{value}'; use one of {valid}.") from None


def open_dataset(root: str | Path, repo_id: str, episodes: list[int] | None = None) -> LeRobotDataset:
    """Open a local LeRobotDataset that has an ``action`` feature, with errors that name the fix."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ValueError(
            f"dataset root {root} does not exist. Pass --root=<directory of a local LeRobotDataset> "
            "(the folder holding meta/info.json, meta/stats.json and data/)."
        )
    if not (root / "meta" / "info.json").is_file() or not (root / "data").is_dir():
        raise ValueError(
            f"{root} is not a LeRobotDataset (v3.0): meta/info.json or data/ is missing. Point --root at the "
            "dataset folder itself, e.g. the one lerobot-record wrote."
        )
    if episodes is not None:
        total = json.loads((root / "meta" / "info.json").read_text()).get("total_episodes", 0)
        unknown = sorted(set(episodes) - set(range(total)))
        if unknown or not episodes:
            raise ValueError(
                f"--episodes must list episode indices of {root}, which has episodes 0..{total - 1}; got {episodes}."
            )
    try:
        # pyav: only tabular columns are read here, and probing torchcodec would log a long traceback.
        dataset = LeRobotDataset(repo_id=repo_id, root=root, episodes=episodes, video_backend="pyav")
    except Exception as err:  # LeRobot falls back to the hub when files are missing: report, don't download
        raise ValueError(f"could not open the LeRobotDataset at {root}: {type(err).__name__}: {err}") from err
    if ACTION not in dataset.meta.features:
        features = ", ".join(sorted(dataset.meta.features))
        raise ValueError(
            f"dataset {root} has no '{ACTION}' feature (features: {features}). FAST tokenizes the action "
            "column; record or convert the dataset with an 'action' feature."
        )
    return dataset


def action_normalizers(
    dataset: LeRobotDataset, mode: NormalizationMode
) -> tuple[NormalizerProcessorStep, UnnormalizerProcessorStep]:
    """LeRobot's (un)normaliser for the action, built from ``meta/stats.json`` as lerobot-train does."""
    shape = tuple(dataset.meta.features[ACTION]["shape"])
    stats = dataset.meta.stats or {}
    if mode != NormalizationMode.IDENTITY:
        if ACTION not in stats:
            raise ValueError(
                f"{dataset.root}/meta/stats.json has no '{ACTION}' statistics, so {mode.value} normalisation is "
                "impossible. Recompute the stats (lerobot.datasets.recompute_stats) or pass "
                "--normalization_mode=IDENTITY."
            )
        missing = [name for name in REQUIRED_STATS[mode] if name not in stats[ACTION]]
        if missing:
            raise ValueError(
                f"{mode.value} normalisation needs action stats {', '.join(missing)}, which "
                f"{dataset.root}/meta/stats.json lacks. Add them with lerobot's "
                "augment_dataset_quantile_stats.py script or choose another --normalization_mode."
            )
    features = {ACTION: PolicyFeature(type=FeatureType.ACTION, shape=shape)}
    norm_map = {FeatureType.ACTION: mode}
    action_stats = {ACTION: stats[ACTION]} if ACTION in stats else {}
    return (
        NormalizerProcessorStep(features=features, norm_map=norm_map, stats=action_stats),
        UnnormalizerProcessorStep(features=features, norm_map=norm_map, stats=action_stats),
    )


def apply_action_step(step: NormalizerProcessorStep | UnnormalizerProcessorStep, actions: np.ndarray) -> np.ndarray:
    """(Un)normalise an action array of any leading shape with one of LeRobot's steps (float64 out)."""
    tensor = torch.from_numpy(np.ascontiguousarray(actions, dtype=np.float32))
    out = step(create_transition(action=tensor))[TransitionKey.ACTION]
    return out.numpy().astype(np.float64)


def check_horizon(dataset: LeRobotDataset, horizon: int, what: str = "--horizon") -> None:
    """Refuse a chunk length that some selected episode cannot hold, naming the episode."""
    episodes = dataset.meta.episodes
    selected = set(dataset.episodes) if dataset.episodes is not None else None
    lengths = {
        int(ep): int(n)
        for ep, n in zip(episodes["episode_index"], episodes["length"], strict=True)
        if selected is None or int(ep) in selected
    }
    if not lengths:
        raise ValueError(f"no episodes selected in {dataset.root}; check --episodes.")
    shortest = min(lengths, key=lengths.get)
    if lengths[shortest] < horizon:
        raise ValueError(
            f"{what}={horizon} is longer than episode {shortest}, which has only {lengths[shortest]} frames "
            f"(chunks never cross episodes). Use {what} <= {lengths[shortest]}, or leave that episode out with "
            "--episodes=[...]."
        )


def load_action_chunks(
    dataset: LeRobotDataset,
    horizon: int,
    *,
    mode: str | NormalizationMode = NormalizationMode.QUANTILES,
    stride: int = 1,
    max_chunks: int | None = None,
    seed: int = 0,
    show_progress: bool = True,
    relative_exclude_joints: list[str] | None = None,
) -> ActionChunks:
    """All windows of ``horizon`` consecutive actions inside each episode, raw and normalised.

    With ``relative_exclude_joints`` (a list, possibly empty) each window becomes relative to the state at its first
    frame, on every action dimension but those names, as LeRobot's ``RelativeActionsProcessorStep`` makes a
    policy's targets. The progress bar only shows on a terminal.
    """
    mode = parse_normalization_mode(mode)
    check_horizon(dataset, horizon)
    normalizer, unnormalizer = action_normalizers(dataset, mode)

    table = dataset.hf_dataset.data  # Arrow table: reading columns decodes no image or video
    dim = int(np.prod(dataset.meta.features[ACTION]["shape"]))
    actions = table.column(ACTION).combine_chunks().flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
    episode_of_row = table.column("episode_index").to_numpy()
    order = np.lexsort((table.column("frame_index").to_numpy(), episode_of_row))
    actions, episode_of_row = actions[order], episode_of_row[order]
    names = dataset.meta.features[ACTION].get("names")
    names = list(names) if isinstance(names, list) else None
    offsets = np.zeros_like(actions)  # what each window starting at that row is taken relative to
    if relative_exclude_joints is not None:
        if OBS_STATE not in dataset.meta.features:
            raise ValueError(f"relative actions need '{OBS_STATE}', which {dataset.root} does not have.")
        state_dim = int(np.prod(dataset.meta.features[OBS_STATE]["shape"]))
        state = table.column(OBS_STATE).combine_chunks().flatten().to_numpy(zero_copy_only=False)
        state = state.reshape(-1, state_dim)[order][:, :dim]
        step = RelativeActionsProcessorStep(enabled=True, exclude_joints=relative_exclude_joints, action_names=names)
        mask = np.asarray(step._build_mask(dim), dtype=np.float64)
        offsets = np.pad(state, ((0, 0), (0, dim - state.shape[1]))) * mask
    boundaries = np.flatnonzero(np.diff(episode_of_row)) + 1

    windows, episode_index, start_frame = [], [], []
    for rows in tqdm(
        np.split(np.arange(len(actions)), boundaries), desc="reading episodes", disable=None if show_progress else True
    ):
        starts = np.arange(0, len(rows) - horizon + 1, stride)
        # sliding_window_view gives [n, D, H]; chunks are [n, H, D]
        window = sliding_window_view(actions[rows], horizon, axis=0)[starts].transpose(0, 2, 1)
        windows.append(window - offsets[rows[starts]][:, None, :])
        episode_index.append(np.full(len(starts), episode_of_row[rows[0]]))
        start_frame.append(starts)
    raw = np.concatenate(windows).astype(np.float64)
    episode_index, start_frame = np.concatenate(episode_index), np.concatenate(start_frame)
    if max_chunks is not None and max_chunks < len(raw):
        keep = np.sort(np.random.default_rng(seed).choice(len(raw), size=max_chunks, replace=False))
        raw, episode_index, start_frame = raw[keep], episode_index[keep], start_frame[keep]

    return ActionChunks(
        raw=raw,
        normalized=apply_action_step(normalizer, raw),
        episode_index=episode_index,
        start_frame=start_frame,
        mode=mode,
        names=names,
        dataset=str(dataset.root),
        repo_id=dataset.repo_id,
        unnormalizer=unnormalizer,
        relative_exclude_joints=relative_exclude_joints,
    )


def split_into_subchunks(chunks: ActionChunks, split_every: int) -> ActionChunks:
    """The complete ``split_every``-step sub-chunks of every chunk (a shorter last one is left out), each labelled
    with its chunk's episode and start frame: what a FAST tokenizer for the split layout is fitted on."""
    n = chunks.horizon // split_every
    keep = n * split_every

    def cut(values: np.ndarray) -> np.ndarray:
        return values[:, :keep].reshape(len(values) * n, split_every, chunks.action_dim)

    return replace(
        chunks,
        raw=cut(chunks.raw),
        normalized=cut(chunks.normalized),
        episode_index=np.repeat(chunks.episode_index, n),
        start_frame=np.repeat(chunks.start_frame, n),
    )


def tokenizer_chunks(
    cfg: ChunkSourceConfig, dataset: LeRobotDataset, horizon: int
) -> tuple[ActionChunks, ActionChunks | None]:
    """The ``horizon``-step chunks a tokenizer is fitted or checked on, and the policy-sized chunks of the layout
    section (None without ``chunk_size``). With relative actions the former are the sub-chunks of the latter."""
    load = {
        "mode": cfg.normalization_mode,
        "stride": cfg.stride,
        "max_chunks": cfg.max_chunks,
        "seed": cfg.seed,
        "relative_exclude_joints": cfg.relative_exclude_joints if cfg.relative_actions else None,
    }
    layout = load_action_chunks(dataset, cfg.chunk_size, **load) if cfg.chunk_size is not None else None
    if cfg.relative_actions:
        return split_into_subchunks(layout, horizon), layout
    return load_action_chunks(dataset, horizon, **load), layout


def summarize_range(chunks: ActionChunks) -> RangeSummary:
    flat = chunks.normalized.reshape(-1, chunks.action_dim)
    threshold = FAR_OUTSIDE_MEAN_STD if chunks.mode == NormalizationMode.MEAN_STD else FAR_OUTSIDE
    return RangeSummary(
        low=float(flat.min()),
        high=float(flat.max()),
        dim_low=flat.min(axis=0).tolist(),
        dim_high=flat.max(axis=0).tolist(),
        far_share=(np.abs(flat) > threshold).mean(axis=0).tolist(),
        far_threshold=threshold,
    )


def range_warning(summary: RangeSummary, chunks: ActionChunks) -> str | None:
    """A readable warning when a sizeable share of normalised values lies far outside [-1, 1]."""
    flagged = summary.flagged_dims()
    if not flagged:
        return None
    worst = sorted(flagged, key=lambda d: -summary.far_share[d])
    lines = [
        f"WARNING: normalised actions reach {summary.low:.2f}..{summary.high:.2f}; FAST expects about [-1, 1]. "
        f"{len(flagged)} of {chunks.action_dim} dims have more than {FAR_SHARE_WARNING:.0%} of their values "
        f"beyond |x| > {summary.far_threshold:g}:"
    ]
    lines += [
        f"  dim {chunks.dim_name(d)}: range {summary.dim_low[d]:.2f}..{summary.dim_high[d]:.2f}, "
        f"{summary.far_share[d]:.1%} far outside"
        for d in worst[:8]
    ]
    if len(worst) > 8:
        lines.append(f"  ... and {len(worst) - 8} more")
    if chunks.mode in (NormalizationMode.QUANTILES, NormalizationMode.QUANTILE10, NormalizationMode.MIN_MAX):
        lines.append(
            f"The {chunks.mode.value} statistics in meta/stats.json are narrow for these dims (LeRobot aggregates "
            "quantiles as the mean of per-episode quantiles, which is narrower than the data's own spread)."
        )
    lines.append(
        "Wide values make the DCT coefficients span many integers: the tokenizer needs a larger --vocab_size "
        "(fit says how large) and more tokens per chunk. Alternatives: --normalization_mode=MIN_MAX, or stats "
        "computed over all frames; the policy must then use the same normalisation."
    )
    return "\n".join(lines)
