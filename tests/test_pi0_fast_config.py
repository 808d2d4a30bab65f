"""pi0_fast registration (taking over LeRobot's core type), config validation (RTC: test_pi0_fast_rtc.py)."""

from __future__ import annotations

import json
import logging

import draccus
import pytest
from lerobot.configs import PreTrainedConfig
from lerobot.policies.factory import get_policy_class, make_policy_config, make_pre_post_processors
from lerobot.policies.pi0_fast.configuration_pi0_fast import PI0FastConfig as CorePI0FastConfig
from pi0_fast_helpers import make_assets, make_config

import lerobot_fastplus  # noqa: F401  (registers the plugin's types)
from lerobot_fastplus.fast_action_step import FastActionTokenizerStep
from lerobot_fastplus.policies.pi0_fast import configuration_pi0_fast
from lerobot_fastplus.policies.pi0_fast.configuration_pi0_fast import SEG_IDS, PI0FastConfig
from lerobot_fastplus.policies.pi0_fast.modeling_pi0_fast import PI0FastPolicy


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return make_assets(tmp_path_factory.mktemp("pi0_fast_config"))


def test_the_pi0_fast_type_resolves_to_the_plugin(assets) -> None:
    assert PreTrainedConfig.get_choice_class("pi0_fast") is PI0FastConfig
    assert issubclass(PI0FastConfig, CorePI0FastConfig)
    assert type(make_policy_config("pi0_fast")) is PI0FastConfig
    assert get_policy_class("pi0_fast") is PI0FastPolicy
    config = make_config(assets)
    assert config.type == "pi0_fast"
    pre, _ = make_pre_post_processors(config, dataset_stats=assets.stats)
    assert any(isinstance(step, FastActionTokenizerStep) for step in pre.steps)


def test_taking_over_the_type_is_logged_and_idempotent(monkeypatch, caplog) -> None:
    registry = dict(PreTrainedConfig._choice_registry)
    registry["pi0_fast"] = CorePI0FastConfig
    monkeypatch.setattr(PreTrainedConfig, "_choice_registry", registry)
    with caplog.at_level(logging.INFO):
        configuration_pi0_fast._take_over_core_type()
    assert "policy type 'pi0_fast' now resolves to" in caplog.text
    assert "(was lerobot.policies.pi0_fast.configuration_pi0_fast.PI0FastConfig)" in caplog.text
    assert registry["pi0_fast"] is PI0FastConfig
    caplog.clear()
    with caplog.at_level(logging.INFO):
        configuration_pi0_fast._take_over_core_type()
    assert registry["pi0_fast"] is PI0FastConfig and "now resolves" not in caplog.text


def test_a_core_config_json_parses_with_every_core_field(tmp_path) -> None:
    core = CorePI0FastConfig(chunk_size=30, n_action_steps=10, max_action_tokens=128, temperature=0.5)
    data = {"type": "pi0_fast", **draccus.encode(core)}
    (tmp_path / "config.json").write_text(json.dumps(data))
    config = PreTrainedConfig.from_pretrained(tmp_path)
    assert type(config) is PI0FastConfig
    assert (config.chunk_size, config.n_action_steps, config.max_action_tokens) == (30, 10, 128)
    assert config.temperature == 0.5
    assert config.action_layout is None  # resolved to "core" by PI0FastPolicy.from_pretrained
    saved = draccus.encode(PI0FastConfig(action_layout="split"), PreTrainedConfig)
    assert saved["type"] == "pi0_fast" and saved["action_layout"] == "split"


def test_a_core_config_json_with_a_short_chunk_parses_and_a_split_policy_needs_a_fitting_tokenizer(
    tmp_path, assets
) -> None:
    core = CorePI0FastConfig(chunk_size=5, n_action_steps=5)
    (tmp_path / "config.json").write_text(json.dumps({"type": "pi0_fast", **draccus.encode(core)}))
    config = PreTrainedConfig.from_pretrained(tmp_path)
    assert (config.chunk_size, config.split_every, config.action_layout) == (5, 5, None)  # split_every fits
    # a fresh split-layout policy of 5-step chunks needs a FAST tokenizer of 5-step chunks (the test's has 10)
    with pytest.raises(ValueError, match="fitted on 10-step chunks, but split_every=5"):
        PI0FastPolicy(make_config(assets, chunk_size=5, n_action_steps=5, split_every=None, action_layout=None))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"split_every": 25, "action_layout": "split"}, "split_every=25 must be in"),
        ({"split_every": 0, "action_layout": "split"}, "split_every=0 must be in"),
        ({"action_layout": "fancy"}, "action_layout='fancy'"),
        ({"paligemma_variant": "gemma_7b"}, "paligemma_variant='gemma_7b' is unknown"),
        ({"action_bos_token_id": SEG_IDS[0] - 1}, "action_bos_token_id=257023 collides with FAST or text ids"),
        ({"action_split_token_id": 5}, "action_split_token_id=5 collides"),
        ({"action_eos_token_id": SEG_IDS[0]}, "must be three different ids"),
        ({"fast_skip_tokens": 0}, "fast_skip_tokens=0"),
        ({"max_action_tokens": 4}, "cannot hold even the shortest layout"),
        ({"max_decoding_steps": 0}, "max_decoding_steps must be positive"),
        ({"temperature": -1.0}, "temperature must be >= 0"),
        ({"n_action_steps": 30}, "cannot be greater than chunk_size"),
    ],
)
def test_invalid_configs_are_refused_with_the_fix(overrides, message) -> None:
    kwargs = {"chunk_size": 20, "n_action_steps": 20, "split_every": 10, **overrides}
    with pytest.raises(ValueError, match=message):
        PI0FastConfig(**kwargs)


def test_special_ids_follow_fast_skip_tokens() -> None:
    # with 256 skipped ids, the 128 ids below <seg> are free for the layout too
    assert PI0FastConfig(fast_skip_tokens=256, action_bos_token_id=SEG_IDS[0] - 1).fast_id_base == 257152 - 257
    with pytest.raises(ValueError, match="collides with FAST or text ids"):
        PI0FastConfig(fast_skip_tokens=64)  # the default ids would be FAST ids


PARSE_TRAIN_FLAGS = """
import json, sys
import draccus
from lerobot.configs.train import TrainPipelineConfig
from lerobot.utils.import_utils import register_third_party_plugins

register_third_party_plugins()  # what LeRobot's CLIs run before parsing
for args in json.loads(sys.argv[1]):  # one interpreter for every flag set: the imports dominate the time
    try:
        cfg = draccus.parse(TrainPipelineConfig, args=args)
        print(json.dumps({"type": type(cfg.policy).__module__, "split_every": cfg.policy.split_every}))
    except BaseException as err:
        print(json.dumps({"error": f"{type(err).__name__}: {err}"}))
"""


@pytest.mark.parametrize("policy_type", ["pi0_fast", "pi05_ki"])
def test_a_short_chunk_gets_a_fitting_split_every_unless_one_is_given(policy_type) -> None:
    """``--policy.chunk_size=5`` alone works (split_every defaults to at most chunk_size); an explicit
    ``--policy.split_every=10`` contradicts it and is refused while the flags are parsed."""
    import subprocess
    import sys

    flag_sets = [
        ["--policy.chunk_size=5"],
        ["--policy.chunk_size=50"],
        ["--policy.chunk_size=5", "--policy.split_every=10"],
    ]
    common = [f"--policy.type={policy_type}", "--dataset.repo_id=local/x", "--policy.n_action_steps=5"]
    args = json.dumps([common + flags for flags in flag_sets])
    out = subprocess.run([sys.executable, "-c", PARSE_TRAIN_FLAGS, args], capture_output=True, text=True)
    short, default, refused = [json.loads(line) for line in out.stdout.strip().splitlines()[-3:]]
    assert short == {"type": f"lerobot_fastplus.policies.{policy_type}.configuration_{policy_type}", "split_every": 5}
    assert default["split_every"] == 10
    assert "split_every=10 must be in [1, chunk_size=5]" in refused["error"]
