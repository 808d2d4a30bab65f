"""pi05_ki checkpoints: round trip, starting from a (locally made, tiny) core pi05 checkpoint, and loud failures
on corrupted or mismatched weights."""

from __future__ import annotations

import shutil

import pytest
import torch
from ki_helpers import CHUNK, make_assets, make_config
from lerobot.policies.pi05 import PI05Config
from safetensors.torch import load_file, save_file

from lerobot_fastplus.policies.common.checkpoint import FAST_TOKENIZER_DIR
from lerobot_fastplus.policies.pi05_ki.modeling_pi05_ki import EMBED_KEY, PI05KIPolicy
from testing_support.core_tiny import core_pi05_tiny

WEIGHTS = "model.safetensors"


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return make_assets(tmp_path_factory.mktemp("ki_weights"))


@pytest.fixture(scope="module")
def pi05_dir(assets, tmp_path_factory):
    """A checkpoint written by LeRobot's core PI05Policy (tiny backbone) with random weights."""
    config = PI05Config(device="cpu", chunk_size=CHUNK, n_action_steps=CHUNK, image_resolution=(64, 64))
    ki = make_config(assets)
    config.input_features, config.output_features = ki.input_features, ki.output_features
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("pi05_ckpt")
    core_pi05_tiny(config).save_pretrained(path)
    return path


def assert_same_tensors(state: dict[str, torch.Tensor], policy: PI05KIPolicy) -> None:
    ours = policy.state_dict()
    assert ours.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(ours[key], value), key


def test_save_and_reload_round_trip_with_the_embedded_fast_tokenizer(assets, tmp_path) -> None:
    fast_copy = shutil.copytree(assets.fast_dir, tmp_path / "fast_copy")
    torch.manual_seed(0)
    policy = PI05KIPolicy(make_config(assets, fast_tokenizer_path=str(fast_copy)))
    with torch.no_grad():  # training moves the input embedding away from the (untrained) lm_head copy
        policy.state_dict()[EMBED_KEY].add_(0.5)
    policy.save_pretrained(tmp_path / "ckpt")
    shutil.rmtree(fast_copy)  # the checkpoint must not need the original tokenizer directory
    assert (tmp_path / "ckpt" / FAST_TOKENIZER_DIR / "tokenizer.json").is_file()
    loaded = PI05KIPolicy.from_pretrained(tmp_path / "ckpt")
    assert loaded.config.type == "pi05_ki" and not loaded.training
    assert_same_tensors(policy.state_dict(), loaded)
    assert loaded.fast_tokenizer.to_dict() == policy.fast_tokenizer.to_dict()


def test_init_from_a_core_pi05_checkpoint_loads_every_tensor(assets, pi05_dir) -> None:
    policy = PI05KIPolicy(make_config(assets, init_from=str(pi05_dir)))
    assert_same_tensors(load_file(pi05_dir / WEIGHTS), policy)
    via_path = PI05KIPolicy.from_pretrained(pi05_dir, config=make_config(assets))
    assert_same_tensors(load_file(pi05_dir / WEIGHTS), via_path)


def test_openpi_style_key_names_load(assets, pi05_dir, tmp_path) -> None:
    """Converted openpi checkpoints have no ``model.`` prefix and name the time MLP ``action_time_mlp_*``."""
    state = load_file(pi05_dir / WEIGHTS)
    renamed = {k.removeprefix("model.").replace("time_mlp_", "action_time_mlp_"): v for k, v in state.items()}
    save_file(renamed, tmp_path / WEIGHTS)
    policy = PI05KIPolicy(make_config(assets, init_from=str(tmp_path)))
    assert_same_tensors(state, policy)


def test_pi05_checkpoint_without_a_pi05_ki_config_is_refused(pi05_dir) -> None:
    with pytest.raises(ValueError, match=r"not a pi05_ki config.*init_from"):
        PI05KIPolicy.from_pretrained(pi05_dir)


def test_corrupted_weights_fail_loudly(assets, pi05_dir, tmp_path) -> None:
    shutil.copytree(pi05_dir, tmp_path, dirs_exist_ok=True)
    data = (tmp_path / WEIGHTS).read_bytes()
    (tmp_path / WEIGHTS).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="could not read the weights"):
        PI05KIPolicy(make_config(assets, init_from=str(tmp_path)))


def test_missing_and_mismatched_weights_are_named(assets, pi05_dir, tmp_path) -> None:
    state = load_file(pi05_dir / WEIGHTS)
    dropped = "model.action_out_proj.bias"
    save_file({k: v for k, v in state.items() if k != dropped}, tmp_path / WEIGHTS)
    with pytest.raises(ValueError, match=rf"1 missing \({dropped}\)"):
        PI05KIPolicy(make_config(assets, init_from=str(tmp_path)))
    with pytest.raises(ValueError, match=r"wrong shape \(model\.action_in_proj\.weight: checkpoint \(64, 32\)"):
        PI05KIPolicy(make_config(assets, init_from=str(pi05_dir), max_action_dim=16))


def test_missing_checkpoint_and_non_strict_loading_are_refused(assets, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="not a pi05 / pi05_ki checkpoint directory"):
        PI05KIPolicy(make_config(assets, init_from=str(tmp_path)))
    with pytest.raises(ValueError, match="strictly"):
        PI05KIPolicy.from_pretrained(tmp_path, config=make_config(assets), strict=False)
