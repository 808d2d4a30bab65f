"""pi0_fast checkpoints: save/reload round trip, strict loading with clear errors, core pi0_fast checkpoints load
and decode with core's layout."""

from __future__ import annotations

import json

import draccus
import pytest
import torch
from lerobot.policies.factory import make_pre_post_processors
from lerobot.policies.pi0_fast.configuration_pi0_fast import PI0FastConfig as CorePI0FastConfig
from lerobot.utils.constants import OBS_LANGUAGE_ATTENTION_MASK, OBS_LANGUAGE_TOKENS
from pi0_fast_helpers import CHUNK, DIM, RES, core_tiny_model, make_assets, make_config, raw_batch, set_features
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer

from lerobot_fastplus.policies.common.checkpoint import FAST_TOKENIZER_DIR
from lerobot_fastplus.policies.pi0_fast.modeling_pi0_fast import PI0FastPolicy


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return make_assets(tmp_path_factory.mktemp("pi0_fast_weights"))


@pytest.fixture(scope="module")
def saved(assets, tmp_path_factory):
    torch.manual_seed(0)
    policy = PI0FastPolicy(make_config(assets))
    path = tmp_path_factory.mktemp("ckpt") / "pretrained_model"
    policy.save_pretrained(path)
    return policy, path


def observation(assets, config, n: int = 2) -> dict:
    pre, _ = make_pre_post_processors(make_config(assets), dataset_stats=assets.stats)
    return pre(raw_batch(n, seed=7, with_action=False))


def test_round_trip_gives_the_same_weights_and_decodes(assets, saved) -> None:
    policy, path = saved
    assert (path / FAST_TOKENIZER_DIR / "tokenizer.json").is_file()
    assert json.loads((path / "config.json").read_text())["action_layout"] == "split"
    reloaded = PI0FastPolicy.from_pretrained(path)
    assert reloaded.config.action_layout == "split"
    for key, value in policy.state_dict().items():
        assert torch.equal(value, reloaded.state_dict()[key]), key
    obs = observation(assets, policy.config)
    policy.eval()
    torch.testing.assert_close(policy.predict_action_chunk(obs), reloaded.predict_action_chunk(obs))


def test_missing_and_misshapen_weights_raise_naming_them(saved, tmp_path) -> None:
    _, path = saved
    state = load_file(path / "model.safetensors")
    embed = "model.paligemma_with_expert.paligemma.model.language_model.layers.0.mlp.up_proj.weight"
    del state[embed]
    state["model.stray.weight"] = torch.zeros(1)
    norm = "model.paligemma_with_expert.paligemma.model.language_model.norm.weight"
    state[norm] = torch.zeros(3)
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", FAST_TOKENIZER_DIR):
        (broken / name).symlink_to(path / name)
    save_file(state, broken / "model.safetensors")
    with pytest.raises(ValueError) as info:
        PI0FastPolicy.from_pretrained(broken)
    message = str(info.value)
    assert "1 missing" in message and embed in message
    assert "1 unexpected (model.stray.weight)" in message
    assert f"{norm}: checkpoint (3,), model (64,)" in message


def test_partial_loads_and_unreadable_files_are_refused(saved, tmp_path) -> None:
    _, path = saved
    with pytest.raises(ValueError, match="always loads strictly"):
        PI0FastPolicy.from_pretrained(path, strict=False)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "config.json").symlink_to(path / "config.json")
    (corrupt / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="corrupted or not safetensors"):
        PI0FastPolicy.from_pretrained(corrupt)
    with pytest.raises(FileNotFoundError, match="not a pi0_fast checkpoint directory"):
        (tmp_path / "empty").mkdir()
        (tmp_path / "empty" / "config.json").symlink_to(path / "config.json")
        PI0FastPolicy.from_pretrained(tmp_path / "empty")


def test_a_core_checkpoint_loads_strictly_and_decodes_with_cores_layout(assets, tmp_path) -> None:
    """A checkpoint as core ``PI0FastPolicy.save_pretrained`` writes it: core config fields only, ``model.`` keys,
    no FAST tokenizer copy."""
    torch.manual_seed(1)
    core_config = set_features(
        CorePI0FastConfig(
            device="cpu",
            image_resolution=(RES, RES),
            chunk_size=CHUNK,
            n_action_steps=8,  # core would decode only 8 steps
            tokenizer_max_length=24,
            max_decoding_steps=64,
            text_tokenizer_name=str(assets.text_dir),
            action_tokenizer_name=str(assets.fast_dir),
        )
    )
    core = core_tiny_model(core_config)
    path = tmp_path / "core_ckpt"
    path.mkdir()
    # core configs only name published variants; this core-trained checkpoint is the tiny one
    config_json = {"type": "pi0_fast", **draccus.encode(core_config), "paligemma_variant": "gemma_tiny"}
    (path / "config.json").write_text(json.dumps(config_json))
    save_file({f"model.{k}": v.contiguous() for k, v in core.state_dict().items()}, path / "model.safetensors")

    policy = PI0FastPolicy.from_pretrained(path)
    assert policy.config.action_layout == "core" and policy.layout.n_subchunks == 1
    for key, value in core.state_dict().items():
        assert torch.equal(policy.model.state_dict()[key], value), key
    text = AutoTokenizer.from_pretrained(assets.text_dir)
    opening = [text.bos_token_id, text.convert_tokens_to_ids("Action"), text.convert_tokens_to_ids(":")]
    assert policy.model.start_ids.tolist() == opening  # decoding starts after "<bos> Action :", as trained
    assert policy.model.candidate_vocab[-1].item() == text.convert_tokens_to_ids("|")  # ... and ends at "|"

    obs = observation(assets, policy.config)
    images, img_masks = policy._preprocess_images(obs)
    tokens, masks = obs[OBS_LANGUAGE_TOKENS], obs[OBS_LANGUAGE_ATTENTION_MASK]
    generated = policy.model.generate(images, img_masks, tokens, masks, policy.grammar)
    fast_vocab = set(policy.model.local_to_vocab[: policy.model.n_fast].tolist())
    emitted = set(policy.model.candidate_vocab[generated].flatten().tolist())
    assert emitted <= fast_vocab | {text.convert_tokens_to_ids("|")}  # never "Action", text, SPLIT or BOS
    chunk = policy.predict_action_chunk(obs)
    assert chunk.shape == (2, CHUNK, DIM) and torch.isfinite(chunk).all()
    assert policy.last_decode.n_incomplete == 0  # core's layout decodes under the exact grammar too


def test_a_split_checkpoint_saved_before_the_tied_head_keeps_decoding_from_its_lm_head(tmp_path, assets) -> None:
    """Split-layout checkpoints written before ``action_head`` existed scored actions with core's untied lm_head; a
    new policy ties the head to the input embedding. Loading must not silently switch an old checkpoint's head."""
    torch.manual_seed(0)
    policy = PI0FastPolicy(make_config(assets))
    assert policy.config.action_head == "embedding"
    assert not policy.model.paligemma_with_expert.paligemma.lm_head.weight.requires_grad
    policy.save_pretrained(tmp_path / "new")
    assert PI0FastPolicy.from_pretrained(tmp_path / "new").config.action_head == "embedding"

    old = json.loads((tmp_path / "new" / "config.json").read_text())
    del old["action_head"]  # what this plugin wrote before
    (tmp_path / "new" / "config.json").write_text(json.dumps(old))
    loaded = PI0FastPolicy.from_pretrained(tmp_path / "new")
    assert loaded.config.action_head == "lm_head"
    lm_head = loaded.model.paligemma_with_expert.paligemma.lm_head.weight
    assert loaded.model.lm_head_weight() is lm_head and lm_head.requires_grad
