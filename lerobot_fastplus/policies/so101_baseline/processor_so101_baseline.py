"""The baselines read the raw state and emit raw actions (identity normalisation): LeRobot's default pipelines."""

from __future__ import annotations

from lerobot.processor.factory import make_default_pre_post_processors


def make_so101_baseline_pre_post_processors(config, dataset_stats=None, **kwargs):
    return make_default_pre_post_processors(config, dataset_stats, normalizer_device=config.device)
