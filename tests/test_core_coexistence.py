"""LeRobot's core pi0_fast keeps working once the plugin has taken the ``pi0_fast`` type over.

Everything runs in a fresh process that registers the plugins the way LeRobot's CLIs do
(``register_third_party_plugins()``) and uses LeRobot's public API only: core's config class keeps its type name
(``.type``, saving, processors), parsing ``pi0_fast`` still gives the plugin's class, and a checkpoint that core
pi0_fast wrote with an ``rtc_config`` loads without RTC (with a warning: core's layout has no sub-chunks to force),
while a new policy built from the same config.json gets the split layout and keeps RTC (prefix conditioning).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lerobot_fastplus.policies.pi0_fast.configuration_pi0_fast import RTC_REFUSAL

TESTS = Path(__file__).resolve().parent

SCRIPT = r"""
import json, logging, sys
from pathlib import Path

import torch
from lerobot.utils.import_utils import register_third_party_plugins

register_third_party_plugins()

import draccus
from lerobot.configs import PreTrainedConfig
from lerobot.utils.feature_utils import dataset_to_policy_features
from lerobot.policies.factory import get_policy_class, make_policy, make_policy_config, make_pre_post_processors
from lerobot.policies.pi0_fast import PI0FastConfig as CoreConfig
from lerobot.policies.rtc.configuration_rtc import RTCConfig
from conftest import smooth_chunks
from policy_helpers import make_assets

from lerobot_fastplus.fast import FastTokenizer
from testing_support.core_tiny import core_pi0_fast_with_variant
from testing_support.synthetic_dataset import make_synthetic_dataset

root = Path(sys.argv[1])
warnings = []
logging.getLogger().addHandler(type("H", (logging.Handler,), {"emit": lambda h, r: warnings.append(r.getMessage())})())
out = {}
assets = make_assets(root / "assets", vocab_size=400)
dataset = make_synthetic_dataset(root / "data", n_episodes=2, episode_len=30, image_size=32)
chunk = 20
fast_dir = FastTokenizer.fit(smooth_chunks(300, chunk, 6), vocab_size=512).save(root / "fast")
common = dict(device="cpu", chunk_size=chunk, n_action_steps=chunk, image_resolution=(64, 64),
              text_tokenizer_name=str(assets.text_dir), action_tokenizer_name=str(fast_dir))

# core's config class keeps its name, is saved as pi0_fast and gets core's processors
core = CoreConfig(**common)
out["core_type"] = core.type
pre, _ = make_pre_post_processors(core, dataset_stats=dataset.meta.stats)
out["core_processor_steps"] = [type(step).__name__ for step in pre.steps]
core.save_pretrained(root / "core_config")
out["saved_type"] = json.loads((root / "core_config" / "config.json").read_text())["type"]
parsed = PreTrainedConfig.from_pretrained(root / "core_config")
out["parsed_class"] = f"{type(parsed).__module__}.{type(parsed).__name__}"
out["parsed_chunk_size"] = parsed.chunk_size
core_fields = draccus.encode(core)
out["encoded_equal"] = {k: v for k, v in draccus.encode(parsed).items() if k in core_fields} == core_fields
plugin_class = PreTrainedConfig.get_choice_class("pi0_fast")
out["registry_class"] = f"{plugin_class.__module__}.{plugin_class.__name__}"
out["policy_class"] = get_policy_class("pi0_fast").__module__
out["new_config_class"] = type(make_policy_config("pi0_fast")).__module__
out["classes_equal_but_distinct"] = [CoreConfig == plugin_class, CoreConfig is plugin_class]
out["class_keyed_lookup"] = {CoreConfig: "core"}.get(plugin_class)

# a checkpoint written by core pi0_fast, with an rtc_config in its config.json
features = dataset_to_policy_features(dataset.meta.features)
ckpt_config = CoreConfig(**common, rtc_config=RTCConfig(execution_horizon=10))
ckpt_config.output_features = {k: f for k, f in features.items() if k == "action"}
ckpt_config.input_features = {k: f for k, f in features.items() if k != "action"}
torch.manual_seed(0)
core_pi0_fast_with_variant(ckpt_config, "gemma_tiny").save_pretrained(root / "core_ckpt")
saved = json.loads((root / "core_ckpt" / "config.json").read_text())
out["ckpt_has_rtc"] = saved["rtc_config"] is not None
# core configs only name published variants; this core-written checkpoint is the tiny one
(root / "core_ckpt" / "config.json").write_text(json.dumps({**saved, "paligemma_variant": "gemma_tiny"}))

cfg = PreTrainedConfig.from_pretrained(root / "core_ckpt")
cfg.pretrained_path = root / "core_ckpt"
policy = make_policy(cfg, ds_meta=dataset.meta)
out["loaded_rtc_config"] = policy.config.rtc_config
out["loaded_layout"] = policy.config.action_layout
out["rtc_warning"] = any("names an rtc_config" in w for w in warnings)
pre, post = make_pre_post_processors(cfg, dataset_stats=dataset.meta.stats)
frame = dataset[0]
obs = {k: v for k, v in frame.items() if k.startswith("observation.")}
obs["task"] = frame["task"]
out["action_shape"] = list(post(policy.select_action(pre(obs))).shape)

# the same config.json as a new policy (no pretrained_path): split layout, RTC kept
fresh = PreTrainedConfig.from_pretrained(root / "core_ckpt")
fresh.split_every = chunk  # the sub-chunk length the test's FAST tokenizer was fitted on
fresh = make_policy(fresh, ds_meta=dataset.meta)
out["fresh_layout"] = fresh.config.action_layout
out["fresh_rtc"] = fresh.config.rtc_config is not None and fresh.supports_rtc()

# an rtc_config next to action_layout='core' is refused when the config is parsed
data = json.loads((root / "core_ckpt" / "config.json").read_text())
(root / "core_rtc").mkdir()
(root / "core_rtc" / "config.json").write_text(json.dumps({**data, "action_layout": "core"}))
try:
    PreTrainedConfig.from_pretrained(root / "core_rtc")
    out["core_rtc_error"] = None
except Exception as err:
    out["core_rtc_error"] = f"{type(err).__name__}: {err}"
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("core_coexistence")
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_LEROBOT_HOME": str(root / "hf_lerobot_home"),
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(root)], cwd=root, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-6000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def test_cores_config_class_keeps_its_type_name_and_processors(probe) -> None:
    assert probe["core_type"] == "pi0_fast"
    steps = probe["core_processor_steps"]
    assert "ActionTokenizerProcessorStep" in steps and "FastActionTokenizerStep" not in steps  # core's pipeline
    assert probe["saved_type"] == "pi0_fast"


def test_parsing_pi0_fast_still_gives_the_plugin(probe) -> None:
    plugin = "lerobot_fastplus.policies.pi0_fast.configuration_pi0_fast.PI0FastConfig"
    assert probe["parsed_class"] == probe["registry_class"] == plugin
    assert probe["parsed_chunk_size"] == 20 and probe["encoded_equal"]
    assert probe["policy_class"] == "lerobot_fastplus.policies.pi0_fast.modeling_pi0_fast"
    assert probe["new_config_class"] == "lerobot_fastplus.policies.pi0_fast.configuration_pi0_fast"
    assert probe["classes_equal_but_distinct"] == [True, False]
    assert probe["class_keyed_lookup"] is None  # hashes stay distinct


def test_a_core_checkpoint_with_an_rtc_config_loads_without_rtc(probe) -> None:
    assert probe["ckpt_has_rtc"]
    assert probe["loaded_rtc_config"] is None and probe["loaded_layout"] == "core"
    assert probe["rtc_warning"]
    assert probe["action_shape"] == [1, 6]


def test_a_new_policy_from_that_config_gets_the_split_layout_and_rtc(probe) -> None:
    assert probe["fresh_layout"] == "split" and probe["fresh_rtc"]


def test_rtc_with_the_core_layout_is_refused_when_parsed(probe) -> None:
    assert probe["core_rtc_error"] is not None and RTC_REFUSAL in probe["core_rtc_error"]
