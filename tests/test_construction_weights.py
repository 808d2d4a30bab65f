"""Building both policies in the target dtype, and with init weights streamed into an empty model (tiny variant):
the dtypes and init scheme of random weights, exact loading (also in slices and across dtypes), buffers that keep
their values, and init_from on pi0_fast (a core checkpoint, refused when broken, before the model is built)."""

from __future__ import annotations

import pytest
import torch
from ki_helpers import make_config as ki_config
from lerobot.policies.factory import make_pre_post_processors
from lerobot.policies.pi0_fast import PI0FastConfig as CorePI0FastConfig
from lerobot.policies.pi05 import PI05Config
from pi0_fast_helpers import CHUNK, RES, make_assets, raw_batch, set_features
from pi0_fast_helpers import make_config as fast_config
from safetensors.torch import load_file, save_file

from lerobot_fastplus.fast_action_step import FastActionTokenizerStep
from lerobot_fastplus.policies.common import checkpoint
from lerobot_fastplus.policies.pi0_fast import modeling_pi0_fast
from lerobot_fastplus.policies.pi0_fast.modeling_pi0_fast import PI0FastPolicy
from lerobot_fastplus.policies.pi05_ki import modeling_pi05_ki
from lerobot_fastplus.policies.pi05_ki.configuration_pi05_ki import FAST_ID_BASE
from lerobot_fastplus.policies.pi05_ki.modeling_pi05_ki import PI05KIPolicy
from testing_support.core_tiny import core_pi0_fast_with_variant, core_pi05_tiny

WEIGHTS = "model.safetensors"


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return make_assets(tmp_path_factory.mktemp("construction"))


def core_pi0_fast_checkpoint(assets, path, dtype: str = "float32"):
    """A tiny checkpoint as core ``PI0FastPolicy.save_pretrained`` writes it."""
    config = CorePI0FastConfig(device="cpu", dtype=dtype, image_resolution=(RES, RES), chunk_size=CHUNK,
                               n_action_steps=CHUNK, text_tokenizer_name=str(assets.text_dir))  # fmt: skip
    torch.manual_seed(1)
    core_pi0_fast_with_variant(set_features(config), "gemma_tiny").save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def core_fast_dir(assets, tmp_path_factory):
    return core_pi0_fast_checkpoint(assets, tmp_path_factory.mktemp("core_pi0_fast"))


@pytest.fixture(scope="module")
def core_pi05_bf16(assets, tmp_path_factory):
    """A tiny core pi05 checkpoint saved in bf16, and the core policy."""
    config = PI05Config(device="cpu", dtype="bfloat16", chunk_size=CHUNK, n_action_steps=CHUNK,
                        image_resolution=(RES, RES))  # fmt: skip
    ki = ki_config(assets)
    config.input_features, config.output_features = ki.input_features, ki.output_features
    torch.manual_seed(2)
    core = core_pi05_tiny(config)
    path = tmp_path_factory.mktemp("core_pi05_bf16")
    core.save_pretrained(path)
    return path, core


def assert_equal_state(expected: dict[str, torch.Tensor], module: torch.nn.Module) -> None:
    ours = module.state_dict()
    assert ours.keys() == expected.keys()
    for key, value in expected.items():
        assert ours[key].dtype == value.dtype and torch.equal(ours[key], value), key


def buffers(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: b for name, b in module.named_buffers()}


# ---------------------------------------------------------------------------------------------------- dtype
def test_bf16_models_keep_cores_dtypes_and_buffers(assets, core_pi05_bf16) -> None:
    """Built in bf16 directly, pi05_ki has exactly core pi05's per-tensor dtypes (fp32 vision tower, projector,
    norms and action/time projections) and the same buffers, rotary inv_freq included."""
    _, core = core_pi05_bf16
    ours = PI05KIPolicy(ki_config(assets, dtype="bfloat16"))
    core_dtypes = {name: t.dtype for name, t in core.state_dict().items()}
    assert {name: t.dtype for name, t in ours.state_dict().items()} == core_dtypes
    assert {torch.float32, torch.bfloat16} == set(core_dtypes.values())
    core_buffers = buffers(core)
    for name, value in buffers(ours).items():
        if name in core_buffers:
            assert value.dtype == core_buffers[name].dtype and torch.equal(value, core_buffers[name]), name


def test_random_init_in_bf16_follows_the_fp32_init_scheme(assets) -> None:
    """Per tensor, weights created in bf16 have the mean and spread of today's fp32-then-cast ones (HF's normal
    init of embeddings and LM heads, torch's defaults for the replaced layers, zero / one norms)."""
    torch.manual_seed(0)
    fp32 = PI05KIPolicy(ki_config(assets)).state_dict()
    torch.manual_seed(1)
    bf16 = PI05KIPolicy(ki_config(assets, dtype="bfloat16")).state_dict()
    checked = 0
    for name, reference in fp32.items():
        ours = bf16[name].float()
        if reference.numel() < 4096:
            continue
        checked += 1
        assert ours.std().item() == pytest.approx(reference.std().item(), rel=0.1, abs=1e-6), name
        assert ours.mean().item() == pytest.approx(reference.mean().item(), abs=0.1 * reference.std().item() + 1e-6)
    assert checked > 20


# ---------------------------------------------------------------------------------------------------- loading
def test_init_from_streams_a_bf16_core_pi05_checkpoint_exactly(assets, core_pi05_bf16, monkeypatch) -> None:
    """Loaded in slices of a few rows (a tiny read budget), into a model whose parameters were never allocated;
    the buffers keep their values, and the FAST ids map onto PaliGemma's vocabulary."""
    path, _ = core_pi05_bf16
    monkeypatch.setattr(checkpoint, "READ_BUDGET", 2**20)  # the 257,152-row embeddings take 32 slices
    torch.manual_seed(0)
    random = PI05KIPolicy(ki_config(assets, dtype="bfloat16"))
    loaded = PI05KIPolicy(ki_config(assets, dtype="bfloat16", init_from=str(path)))
    assert_equal_state(load_file(path / WEIGHTS), loaded)
    random_buffers = buffers(random)
    for name, value in buffers(loaded).items():
        assert not value.is_meta and torch.equal(value, random_buffers[name]), name
    n = loaded.layout.n_fast_ids
    assert loaded.model.layout_to_vocab[:n].tolist() == [FAST_ID_BASE - f for f in range(n)]
    assert loaded.model.layout_to_vocab[n:].tolist() == list(loaded.config.action_special_ids)


def test_a_checkpoint_in_another_dtype_is_cast_to_the_models(assets, core_pi05_bf16) -> None:
    path, _ = core_pi05_bf16
    state = load_file(path / WEIGHTS)
    loaded = PI05KIPolicy(ki_config(assets, init_from=str(path)))  # float32 model
    for key, value in loaded.state_dict().items():
        assert value.dtype == torch.float32 and torch.equal(value, state[key].float()), key


def test_pi0_fast_init_from_a_core_checkpoint_keeps_the_plugins_layout_and_processors(assets, core_fast_dir) -> None:
    policy = PI0FastPolicy(fast_config(assets, action_layout=None, init_from=str(core_fast_dir)))
    assert_equal_state(load_file(core_fast_dir / WEIGHTS), policy)
    assert policy.config.action_layout == "split"
    n = policy.model.n_fast
    bos, split, eos = policy.config.action_special_ids
    expected = [policy.config.fast_id_base - f for f in range(n)]
    assert policy.model.local_to_vocab.tolist() == [*expected, bos, split, eos]
    assert policy.model.candidate_vocab.tolist() == [*expected, split, eos]
    assert policy.model.start_ids.tolist() == [bos]
    pre, _ = make_pre_post_processors(policy.config, dataset_stats=assets.stats)
    assert any(isinstance(step, FastActionTokenizerStep) for step in pre.steps)
    loss, _ = policy.forward(pre(raw_batch(2, seed=1)))
    assert torch.isfinite(loss)


def test_pi0_fast_init_from_refuses_missing_and_misshapen_tensors_by_name(assets, core_fast_dir, tmp_path) -> None:
    state = load_file(core_fast_dir / WEIGHTS)
    dropped = "model.paligemma_with_expert.paligemma.model.language_model.layers.1.mlp.down_proj.weight"
    save_file({k: v for k, v in state.items() if k != dropped}, tmp_path / WEIGHTS)
    with pytest.raises(ValueError, match=rf"1 missing \({dropped}\)"):
        PI0FastPolicy(fast_config(assets, init_from=str(tmp_path)))
    position = (
        "model.paligemma_with_expert.paligemma.model.vision_tower.vision_model.embeddings.position_embedding.weight"
    )
    with pytest.raises(ValueError, match=rf"wrong shape \({position}: checkpoint \(16, 32\), model \(64, 32\)"):
        PI0FastPolicy(fast_config(assets, init_from=str(core_fast_dir), image_resolution=(128, 128)))


@pytest.mark.parametrize("policy", ["pi05_ki", "pi0_fast"])
def test_a_wrong_init_from_fails_before_the_model_is_built(assets, tmp_path, monkeypatch, policy) -> None:
    def built(*args, **kwargs):
        raise AssertionError("the model was built before the path was checked")

    if policy == "pi05_ki":
        monkeypatch.setattr(modeling_pi05_ki.PI05KIPytorch, "__init__", built)
        build = lambda path: PI05KIPolicy(ki_config(assets, init_from=path))  # noqa: E731
    else:
        monkeypatch.setattr(modeling_pi0_fast.FastPlusPI0FastPytorch, "__init__", built)
        build = lambda path: PI0FastPolicy(fast_config(assets, init_from=path))  # noqa: E731
    with pytest.raises(FileNotFoundError, match=rf"--policy.init_from={tmp_path}: .* is not a"):
        build(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not a hub repo id"):
        build(str(tmp_path / "missing" / "dir"))


def test_a_truncated_checkpoint_is_refused_before_any_tensor_is_read(assets, core_fast_dir, tmp_path) -> None:
    data = (core_fast_dir / WEIGHTS).read_bytes()
    (tmp_path / WEIGHTS).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"could not read the weights in .*\(corrupted or not safetensors\)"):
        PI0FastPolicy(fast_config(assets, init_from=str(tmp_path)))
