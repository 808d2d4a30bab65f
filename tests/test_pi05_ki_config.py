"""pi05_ki configuration: registration with LeRobot's factory, validation errors that name the fix, JSON round trip."""

from __future__ import annotations

from pathlib import Path

import draccus
import pytest
from ki_helpers import make_assets, make_config
from lerobot.configs import PreTrainedConfig
from lerobot.configs.train import TrainPipelineConfig
from lerobot.policies.factory import get_policy_class, make_pre_post_processors
from lerobot.policies.pi05 import PI05Config
from lerobot.policies.rtc.configuration_rtc import RTCConfig

import lerobot_fastplus  # noqa: F401  (registers the plugin's types, as LeRobot's plugin discovery does)
from lerobot_fastplus.fast_action_step import FastActionTokenizerStep
from lerobot_fastplus.policies.pi05_ki.configuration_pi05_ki import PI05KIConfig
from lerobot_fastplus.policies.pi05_ki.modeling_pi05_ki import PI05KIPolicy


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return make_assets(tmp_path_factory.mktemp("ki_config"))


def test_lerobot_factory_resolves_the_type(assets) -> None:
    assert PreTrainedConfig.get_choice_class("pi05_ki") is PI05KIConfig
    assert issubclass(PI05KIConfig, PI05Config)
    assert get_policy_class("pi05_ki") is PI05KIPolicy
    config = make_config(assets)
    assert config.type == "pi05_ki"
    pre, _ = make_pre_post_processors(config, dataset_stats=assets.stats)
    (fast_step,) = [step for step in pre.steps if isinstance(step, FastActionTokenizerStep)]
    assert (fast_step.split_every, fast_step.max_tokens) == (config.split_every, config.max_action_tokens)


def test_defaults_are_the_ki_paper_and_pi05_ones() -> None:
    config = PI05KIConfig(device="cpu")
    assert (config.fast_loss_weight, config.flow_loss_weight) == (1.0, 1.0)
    assert config.num_inference_steps == 10 and config.action_decoding == "flow"
    assert config.action_special_ids == (257024, 257025, 257026)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"split_every": 25}, r"split_every=25 must be in \[1, chunk_size=20\]"),
        ({"split_every": 0}, "split_every=0"),
        ({"max_action_tokens": 4}, "max_action_tokens=4 cannot hold"),
        ({"action_bos_token_id": 2}, "action_bos_token_id=2 is not a PaliGemma <seg> id"),
        ({"action_eos_token_id": 257000}, "FAST tokens use the ids from 257023 downwards"),
        ({"action_split_token_id": 257024}, "must be three different ids"),
        ({"fast_loss_weight": -1.0}, "must be non-negative"),
        ({"fast_loss_weight": 0.0, "flow_loss_weight": 0.0}, "not both zero"),
        ({"fast_ce_vocabulary": "text"}, "fast_ce_vocabulary='text'"),
        ({"action_decoding": "beam"}, "action_decoding='beam'"),
        ({"flow_noise_scale": -0.5}, "flow_noise_scale must be >= 0"),
        ({"expert_state_token": True, "init_from": "lerobot/pi05_base"}, "expert_state_token adds a state projection"),
        ({"action_decoding": "fast", "rtc_config": RTCConfig()}, "cannot run with RTC"),
        ({"action_expert_variant": "gemma_300m"}, "cannot share attention"),
        ({"paligemma_variant": "gemma_7b"}, "paligemma_variant='gemma_7b' is unknown"),
        ({"fast_tokenizer_path": ""}, "fast_tokenizer_path is empty"),
        ({"n_action_steps": 30}, "n_action_steps"),
    ],
)
def test_invalid_settings_raise_with_the_fix(assets, overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_config(assets, **overrides)


def test_config_round_trips_through_json(assets, tmp_path) -> None:
    config = make_config(assets, split_every=5, fast_loss_weight=0.3, init_from="lerobot/pi05_base")
    config._save_pretrained(tmp_path)
    loaded = PreTrainedConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, PI05KIConfig)
    for name in ("split_every", "fast_loss_weight", "init_from", "paligemma_variant", "fast_tokenizer_path"):
        assert getattr(loaded, name) == getattr(config, name), name


@pytest.mark.parametrize("name", ["pi05_ki_libero.json", "pi05_ki_so100.json"])
def test_ready_configs_parse_as_lerobot_train_configs(name: str) -> None:
    path = Path(__file__).resolve().parents[1] / "configs" / name
    with draccus.config_type("json"):
        cfg = draccus.parse(TrainPipelineConfig, str(path), args=[])
    assert isinstance(cfg.policy, PI05KIConfig)
    assert cfg.policy.init_from == "lerobot/pi05_base" and cfg.policy.dtype == "bfloat16"
