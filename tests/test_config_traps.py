"""Settings that would train silently wrong are refused or reported when the config or the policy is made:
train_expert_only with the FAST loss (pi05_ki), and a state normalisation that clips the prompt's state bins."""

from __future__ import annotations

import json
import logging

import draccus
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import shared_dataset
from lerobot.configs import PreTrainedConfig
from lerobot.configs.types import NormalizationMode
from lerobot.policies.pi0_fast.configuration_pi0_fast import PI0FastConfig as CorePI0FastConfig
from pi0_fast_helpers import DIM, make_assets
from pi0_fast_helpers import make_config as fast_config

from lerobot_fastplus.policies.common.state_saturation import clipped_share
from lerobot_fastplus.policies.pi0_fast.configuration_pi0_fast import PI0FastConfig
from lerobot_fastplus.policies.pi0_fast.modeling_pi0_fast import PI0FastPolicy
from lerobot_fastplus.policies.pi05_ki.configuration_pi05_ki import PI05KIConfig

QUANTILE_KEYS = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return make_assets(tmp_path_factory.mktemp("config_traps"))


def stats_of(values: np.ndarray) -> dict[str, torch.Tensor]:
    """Statistics as LeRobot stores them in meta/stats.json."""
    stats = {"min": values.min(0), "max": values.max(0), "mean": values.mean(0), "std": values.std(0)}
    stats |= {key: np.quantile(values, q, axis=0) for key, q in QUANTILE_KEYS.items()}
    return {key: torch.tensor(value, dtype=torch.float32) for key, value in stats.items()}


def test_train_expert_only_with_the_fast_loss_is_refused() -> None:
    with pytest.raises(ValueError, match=r"FAST cross-entropy \(fast_loss_weight=1.0\) would train nothing") as info:
        PI05KIConfig(train_expert_only=True)
    assert "--policy.train_expert_only=false" in str(info.value) and "--policy.fast_loss_weight=0" in str(info.value)
    assert PI05KIConfig(train_expert_only=True, fast_loss_weight=0.0).train_expert_only


def test_pi0_fast_normalises_the_state_with_quantiles_unless_a_checkpoint_says_otherwise(tmp_path) -> None:
    mapping = PI0FastConfig().normalization_mapping
    assert mapping["STATE"] is NormalizationMode.QUANTILES and mapping["ACTION"] is NormalizationMode.MEAN_STD
    assert CorePI0FastConfig().normalization_mapping["STATE"] is NormalizationMode.MEAN_STD
    (tmp_path / "config.json").write_text(json.dumps({"type": "pi0_fast", **draccus.encode(CorePI0FastConfig())}))
    loaded = PreTrainedConfig.from_pretrained(tmp_path)
    assert type(loaded) is PI0FastConfig and loaded.normalization_mapping["STATE"] is NormalizationMode.MEAN_STD


def test_the_clipped_share_estimate_is_exact_for_normal_values_and_errs_high_for_skewed_ones() -> None:
    rng = np.random.default_rng(0)
    for values, exact in ((rng.normal(2.0, 3.0, (20000, 3)), True), (rng.exponential(2.0, (20000, 3)), False)):
        stats = stats_of(values)
        for mode, low, high in (
            ("MEAN_STD", stats["mean"] - stats["std"], stats["mean"] + stats["std"]),
            ("QUANTILES", stats["q01"], stats["q99"]),
            ("MIN_MAX", stats["min"], stats["max"]),
        ):
            measured = ((values < low.numpy()) | (values > high.numpy())).mean(axis=0)
            estimated = clipped_share(stats, mode)
            if exact:
                np.testing.assert_allclose(estimated, measured, atol=0.01, err_msg=mode)
            else:  # the larger of the two estimates: never far below what is clipped
                assert (estimated >= measured - 0.03).all(), (mode, estimated, measured)


@pytest.mark.parametrize("name", ["so101_record_test", "g1_bottle_pick"])
def test_the_clipped_share_estimate_matches_the_frames_of_real_datasets(name) -> None:
    """LeRobot's stored quantiles are averages over episodes: on these datasets QUANTILES clips far more than 2%,
    which the estimate sees through the stored mean and std."""
    root = shared_dataset(name)
    frames = pd.concat(pd.read_parquet(p, columns=["observation.state"]) for p in sorted(root.glob("data/*/*.parquet")))
    state = np.stack(frames["observation.state"].to_numpy()).astype(np.float64)
    stats = {
        k: np.asarray(v) for k, v in json.loads((root / "meta" / "stats.json").read_text())["observation.state"].items()
    }
    for mode, low, high in (
        ("MEAN_STD", stats["mean"] - stats["std"], stats["mean"] + stats["std"]),
        ("QUANTILES", stats["q01"], stats["q99"]),
    ):
        measured = ((state < low) | (state > high)).mean()
        estimated = clipped_share(stats, mode).mean()
        assert measured > 0.15 and estimated > 0.15, (mode, measured, estimated)  # both well above the 5% warning
        assert estimated == pytest.approx(measured, abs=0.15), mode
    assert not clipped_share(stats, NormalizationMode.MIN_MAX).any()


def test_a_clipping_state_normalisation_is_reported_with_the_fix(assets, caplog) -> None:
    values = np.random.default_rng(0).normal(3.0, 2.0, size=(5000, DIM))  # under MEAN_STD 32% have |z| > 1
    stats = {
        "observation.state": stats_of(values),
        **{k: v for k, v in assets.stats.items() if k != "observation.state"},
    }
    mean_std = {"VISUAL": "IDENTITY", "STATE": "MEAN_STD", "ACTION": "MEAN_STD"}
    with caplog.at_level(logging.WARNING):
        PI0FastPolicy(fast_config(assets, normalization_mapping=mean_std), dataset_stats=stats)
    assert "under MEAN_STD normalisation about 32% of the dataset's observation.state values" in caplog.text
    assert "Estimated for other modes: QUANTILES 2%, MIN_MAX 0%" in caplog.text
    assert """--policy.normalization_mapping='{"VISUAL": "IDENTITY", "STATE": "<mode>",""" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        PI0FastPolicy(fast_config(assets), dataset_stats=stats)  # the default, QUANTILES: 2% clipped
    assert "state bins" not in caplog.text


def test_statistics_without_the_quantiles_a_mode_needs_are_refused(assets) -> None:
    stats = {key: {k: v for k, v in value.items() if not k.startswith("q")} for key, value in assets.stats.items()}
    with pytest.raises(
        ValueError, match=r"lack q01, q99, which QUANTILES normalisation needs.*augment_dataset_quantile"
    ):
        PI0FastPolicy(fast_config(assets), dataset_stats=stats)
