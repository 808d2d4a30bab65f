"""How much of the state the pi0-family prompt clips, estimated from a dataset's statistics.

The prompt writes the normalised state as 256 bins over [-1, 1]: every value outside falls into bin 0 or 255. The
mode's [-1, 1] is a raw interval per dimension (``mean +- std`` for MEAN_STD, ``[q01, q99]`` for QUANTILES, ...),
and the share of values outside it is estimated twice from ``meta/stats.json``:

* from the distribution its quantiles describe (``min``, ``q01``, ``q10``, ``q50``, ``q90``, ``q99``, ``max``; the
  normal score of the share interpolated linearly in between, exact for normally distributed values);
* from a normal distribution with its ``mean`` and ``std`` (nothing below ``min`` or above ``max``).

The larger is reported. LeRobot aggregates ``mean`` / ``std`` / ``min`` / ``max`` exactly over a dataset, but its
quantiles are the count-weighted mean of each episode's quantiles (``aggregate_feature_stats``), narrower than the
dataset's own when episodes differ: on ``so101_record_test`` 17% of the state values fall outside the stored
``[q01, q99]``, on ``g1_bottle_pick`` 48%. The second estimate catches that (20% and 51% there).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
from lerobot.configs.types import NormalizationMode
from lerobot.utils.constants import OBS_STATE
from scipy.special import ndtr, ndtri

logger = logging.getLogger(__name__)

WARN_ABOVE = 0.05  # QUANTILES clips 2% by construction (1% on each side) when the quantiles are the dataset's
CDF_POINTS = {"min": 0.0, "q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99, "max": 1.0}
BOUNDS = {
    NormalizationMode.MIN_MAX: ("min", "max"),
    NormalizationMode.QUANTILES: ("q01", "q99"),
    NormalizationMode.QUANTILE10: ("q10", "q90"),
}
ALTERNATIVES = (NormalizationMode.QUANTILES, NormalizationMode.MEAN_STD, NormalizationMode.MIN_MAX)


def clipped_share(stats: Mapping[str, Any], mode: NormalizationMode | str) -> np.ndarray:
    """Estimated share, per dimension, of values that normalise outside [-1, 1] under ``mode``."""
    mode = NormalizationMode(mode)
    stat = {key: np.asarray(value, dtype=np.float64).reshape(-1) for key, value in stats.items()}
    missing = [key for key in ("min", "max", "mean", "std", *BOUNDS.get(mode, ())) if key not in stat]
    if missing:
        raise ValueError(
            f"the dataset statistics of {OBS_STATE} lack {', '.join(missing)}, which {mode.value} normalisation "
            "needs: recompute them (LeRobot's augment_dataset_quantile_stats.py adds the quantiles) or choose "
            "another normalisation for STATE in --policy.normalization_mapping."
        )
    if mode is NormalizationMode.IDENTITY:
        low, high = -np.ones_like(stat["min"]), np.ones_like(stat["min"])
    elif mode is NormalizationMode.MEAN_STD:
        low, high = stat["mean"] - stat["std"], stat["mean"] + stat["std"]
    else:
        low, high = (stat[key] for key in BOUNDS[mode])
    probs, keys = zip(*sorted((p, key) for key, p in CDF_POINTS.items() if key in stat), strict=True)
    quantiles = np.maximum.accumulate(np.stack([stat[key] for key in keys]), axis=0)  # [points, dims], sorted
    probs = np.asarray(probs)
    spread = np.maximum(stat["std"], 1e-12)
    shares = []
    for d in range(quantiles.shape[1]):
        if quantiles[-1, d] <= quantiles[0, d]:  # a constant dimension normalises to 0
            shares.append(0.0)
            continue
        from_quantiles = _cdf(low[d], quantiles[:, d], probs) + 1.0 - _cdf(high[d], quantiles[:, d], probs)
        below = ndtr((low[d] - stat["mean"][d]) / spread[d]) if low[d] > stat["min"][d] else 0.0
        above = 1.0 - ndtr((high[d] - stat["mean"][d]) / spread[d]) if high[d] < stat["max"][d] else 0.0
        shares.append(max(from_quantiles, below + above))
    return np.clip(np.asarray(shares), 0.0, 1.0)


def _cdf(x: float, quantiles: np.ndarray, probs: np.ndarray) -> float:
    """Share of values below ``x`` given the values ``quantiles`` at the shares ``probs`` (0 and 1: min, max)."""
    if x <= quantiles[0] or x >= quantiles[-1]:
        return 0.0 if x <= quantiles[0] else 1.0
    inner = (probs > 0) & (probs < 1)
    if inner.sum() >= 2 and quantiles[inner][0] <= x <= quantiles[inner][-1]:
        return float(ndtr(np.interp(x, quantiles[inner], ndtri(probs[inner]))))
    return float(np.interp(x, quantiles, probs))


def warn_if_state_saturates(config: Any, dataset_stats: Mapping[str, Mapping[str, Any]] | None, policy: str) -> None:
    """Log a warning, with the estimates of the other modes and the flag to change, when the configured STATE
    normalisation clips more than ``WARN_ABOVE`` of the dataset's state values; raise when the statistics lack what
    the normalisation needs."""
    if not dataset_stats or OBS_STATE not in dataset_stats or config.robot_state_feature is None:
        return
    stats = dataset_stats[OBS_STATE]
    mode = NormalizationMode(config.normalization_mapping.get("STATE", NormalizationMode.IDENTITY))
    share = clipped_share(stats, mode)
    if share.mean() <= WARN_ABOVE:
        return
    others = []
    for other in ALTERNATIVES:
        if other is not mode:
            try:
                others.append(f"{other.value} {100 * clipped_share(stats, other).mean():.0f}%")
            except ValueError:  # statistics this mode needs are missing
                continue
    action = NormalizationMode(config.normalization_mapping.get("ACTION", NormalizationMode.MEAN_STD)).value
    worst = int(share.argmax())
    logger.warning(
        "%s: the prompt writes the normalised state as 256 bins over [-1, 1], but under %s normalisation about "
        "%.0f%% of the dataset's %s values (estimated from its statistics; dimension %d: %.0f%%) fall outside "
        "[-1, 1], into the first or last bin, where the policy cannot tell them apart. Estimated for other modes: "
        "%s. To keep that part of the state, choose the mode that clips least with --policy.normalization_mapping="
        '\'{"VISUAL": "IDENTITY", "STATE": "<mode>", "ACTION": "%s"}\' (LeRobot stores quantiles averaged over '
        "episodes, narrower than the dataset's own when episodes differ).",
        policy,
        mode.value,
        100 * share.mean(),
        OBS_STATE,
        worst,
        100 * share[worst],
        ", ".join(others),
        action,
    )
