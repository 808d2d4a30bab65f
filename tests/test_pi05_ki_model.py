"""pi05_ki training forward: stop-gradient, no leak of FAST tokens into the expert, train/inference
consistency, loss masking and reductions (tiny variant, CPU)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from ki_helpers import CHUNK, SPLIT, make_assets, make_config, raw_batch
from lerobot.policies.common.vla_utils import make_att_2d_masks, prepare_attention_masks_4d
from lerobot.policies.pi05.modeling_pi05 import compute_layer_complete

from lerobot_fastplus.fast_action_step import ACTION_TOKEN_TARGET_KEY, ACTION_TOKEN_VALID_KEY, ACTION_TOKENS_KEY
from lerobot_fastplus.policies.pi05_ki import modeling_pi05_ki
from lerobot_fastplus.policies.pi05_ki.modeling_pi05_ki import KILosses, PI05KIPolicy
from lerobot_fastplus.policies.pi05_ki.processor_pi05_ki import make_pi05_ki_pre_post_processors

FAST_KEYS = (ACTION_TOKENS_KEY, ACTION_TOKEN_VALID_KEY, ACTION_TOKEN_TARGET_KEY)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return make_assets(tmp_path_factory.mktemp("ki_model"))


def build(assets, **overrides: Any) -> tuple[PI05KIPolicy, Any]:
    torch.manual_seed(0)
    config = make_config(assets, **overrides)
    return PI05KIPolicy(config), make_pi05_ki_pre_post_processors(config, assets.stats)[0]


@pytest.fixture(scope="module")
def setup(assets) -> tuple[PI05KIPolicy, dict]:
    policy, pre = build(assets)
    return policy, pre(raw_batch(3))


def run_model(policy: PI05KIPolicy, batch: dict, seed: int = 0) -> KILosses:
    """The model's unreduced training terms with noise and time fixed by ``seed``."""
    images, img_masks = policy._preprocess_images(batch)
    actions = policy.prepare_action(batch)
    torch.manual_seed(seed)
    noise = policy.model.sample_noise(actions.shape, actions.device)
    time = policy.model.sample_time(actions.shape[0], actions.device)
    tokens, masks = batch["observation.language.tokens"], batch["observation.language.attention_mask"]
    return policy.model(images, img_masks, tokens, masks, actions, noise, time, *(batch[k] for k in FAST_KEYS))


def backbone_and_expert(policy: PI05KIPolicy) -> tuple[dict, dict]:
    """Trainable parameters of the backbone (PaliGemma) and of the action expert path."""
    backbone, expert = {}, {}
    for name, param in policy.model.named_parameters():
        if name.startswith("paligemma_with_expert.paligemma."):
            backbone[name] = param
        elif not name.startswith("paligemma_with_expert.gemma_expert.lm_head"):  # unused by pi05 and KI
            expert[name] = param
    return backbone, expert


def is_zero(param: torch.nn.Parameter) -> bool:
    return param.grad is None or not param.grad.any()


def test_flow_loss_gives_zero_gradient_to_every_backbone_parameter(setup) -> None:
    policy, batch = setup
    policy.zero_grad(set_to_none=True)
    run_model(policy, batch).flow_se.mean().backward()
    backbone, expert = backbone_and_expert(policy)
    assert all(is_zero(p) for p in backbone.values()), [n for n, p in backbone.items() if not is_zero(p)]
    # the time MLP acts only through AdaRMS weights that pi05 initialises to zero: no gradient yet
    zero = sorted(n for n, p in expert.items() if is_zero(p))
    assert zero == [f"time_mlp_{io}.{kind}" for io in ("in", "out") for kind in ("bias", "weight")]


def pi05_layer(*args: Any, n_fast: int, fast_outputs_only: bool, **kwargs: Any) -> list[torch.Tensor]:
    """LeRobot's joint layer (one attention over the whole sequence and mask, no detach) in place of KI's."""
    backbone, expert = compute_layer_complete(*args, **kwargs)
    return [backbone[:, backbone.shape[1] - n_fast :] if fast_outputs_only else backbone, expert]


def test_ki_layers_compute_pi05s_joint_attention(setup, monkeypatch) -> None:
    """KI's block attention and last layer (FAST outputs only) give the values of LeRobot's joint layer."""
    policy, batch = setup
    with torch.no_grad():
        ki = run_model(policy, batch)
        monkeypatch.setattr(modeling_pi05_ki, "compute_layer_ki", pi05_layer)
        joint = run_model(policy, batch)
    torch.testing.assert_close(ki.flow_se, joint.flow_se, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(ki.fast_ce, joint.fast_ce, rtol=1e-4, atol=1e-5)


def test_without_the_stop_gradient_the_flow_loss_would_reach_the_backbone(setup, monkeypatch) -> None:
    """Guards the test above: with pi05's joint layer in place of KI's, backbone gradients appear."""
    policy, batch = setup
    monkeypatch.setattr(modeling_pi05_ki, "compute_layer_ki", pi05_layer)
    policy.zero_grad(set_to_none=True)
    run_model(policy, batch).flow_se.mean().backward()
    layers = policy.model.paligemma_with_expert.paligemma.model.language_model.layers
    assert not is_zero(layers[0].self_attn.k_proj.weight)


def test_fast_loss_reaches_the_backbone_and_not_the_expert(setup) -> None:
    policy, batch = setup
    policy.zero_grad(set_to_none=True)
    out = run_model(policy, batch)
    assert out.fast_ce.numel() > 0
    out.fast_ce.mean().backward()
    backbone, expert = backbone_and_expert(policy)
    lm = "paligemma_with_expert.paligemma.model.language_model."
    for name in (
        f"{lm}layers.0.self_attn.q_proj.weight",
        f"{lm}layers.1.mlp.up_proj.weight",
        f"{lm}embed_tokens.weight",
    ):
        assert not is_zero(backbone[name]), name
    assert not is_zero(
        backbone["paligemma_with_expert.paligemma.model.vision_tower.vision_model.post_layernorm.weight"]
    )
    assert all(is_zero(p) for p in expert.values())


def with_fast_ids(batch: dict, ids: torch.Tensor, valid: torch.Tensor, target: torch.Tensor) -> dict:
    return {**batch, ACTION_TOKENS_KEY: ids, ACTION_TOKEN_VALID_KEY: valid, ACTION_TOKEN_TARGET_KEY: target}


def test_fast_tokens_do_not_leak_into_the_expert(setup) -> None:
    policy, batch = setup
    with torch.no_grad():
        base = run_model(policy, batch)
        ids, valid, target = (batch[k] for k in FAST_KEYS)
        n_fast = policy.layout.n_fast_ids
        shuffled = torch.where(ids < n_fast, (ids * 7 + 3) % n_fast, ids)  # other FAST ids, same layout
        changed = run_model(policy, with_fast_ids(batch, shuffled, valid, target))
        assert not torch.equal(shuffled, ids)
        assert not torch.allclose(changed.fast_ce, base.fast_ce)  # the backbone does see them
        assert torch.equal(changed.flow_se, base.flow_se)
        # a longer sequence (more padding) changes nothing for the expert either
        pad = policy.layout.eos_id
        longer = torch.cat([ids, torch.full_like(ids[:, :9], pad)], dim=1)
        grow = torch.zeros_like(valid[:, :9])
        padded = run_model(
            policy, with_fast_ids(batch, longer, torch.cat([valid, grow], 1), torch.cat([target, grow], 1))
        )
        torch.testing.assert_close(padded.flow_se, base.flow_se, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(padded.fast_ce, base.fast_ce, rtol=1e-5, atol=1e-5)


def training_and_sampling_velocity(policy: PI05KIPolicy, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The expert's v(x_t, t) for fixed x_t and t from the training forward (FAST tokens present) and from the
    sampling path (prefix KV cache, no FAST tokens)."""
    model = policy.model
    images, img_masks = policy._preprocess_images(batch)
    tokens, masks = batch["observation.language.tokens"], batch["observation.language.attention_mask"]
    torch.manual_seed(1)
    x_t = torch.randn(tokens.shape[0], CHUNK, policy.config.max_action_dim)
    time = torch.tensor([0.37, 0.8, 0.05])
    with torch.no_grad():
        v_train, _ = model.velocity_and_fast_hidden(
            images, img_masks, tokens, masks, x_t, time, *(batch[k] for k in FAST_KEYS[:2])
        )
        prefix_embs, prefix_pad, prefix_att = model.embed_prefix(images, img_masks, tokens, masks)
        _, cache = model.paligemma_with_expert.forward(
            attention_mask=prepare_attention_masks_4d(make_att_2d_masks(prefix_pad, prefix_att)),
            position_ids=torch.cumsum(prefix_pad, dim=1) - 1,
            inputs_embeds=[prefix_embs, None],
            use_cache=True,
        )
        v_sample = model.denoise_step(prefix_pad, cache, x_t, time)
    return v_train, v_sample


def test_training_velocity_equals_sampling_velocity(setup) -> None:
    """Same attention, same position ids in both paths."""
    policy, batch = setup
    masks = batch["observation.language.attention_mask"]
    assert masks.sum(1).min() < masks.shape[1]  # the prompt is padded: positions must skip the padding
    torch.testing.assert_close(*training_and_sampling_velocity(policy, batch), rtol=1e-4, atol=1e-5)


def test_loss_is_the_weighted_sum_and_respects_action_padding(assets) -> None:
    policy, pre = build(assets, fast_loss_weight=0.5, flow_loss_weight=2.0)
    raw = raw_batch(3)
    raw["action_is_pad"][0, -SPLIT:] = True  # the whole last sub-chunk of row 0
    raw["action_is_pad"][1, -3:] = True
    batch = pre(raw)
    with torch.no_grad():
        out = run_model(policy, batch, seed=5)
        torch.manual_seed(5)
        loss, logs = policy.forward(batch)
    valid = ~raw["action_is_pad"]
    flow = (out.flow_se[:, :, :4] * valid[..., None]).sum() / (valid.sum() * 4)
    assert logs["flow_loss"] == pytest.approx(flow.item(), rel=1e-5)
    assert logs["fast_ce_loss"] == pytest.approx(out.fast_ce.mean().item(), rel=1e-5)
    assert loss.item() == pytest.approx(0.5 * logs["fast_ce_loss"] + 2.0 * logs["flow_loss"], rel=1e-5)
    assert 0.0 <= logs["fast_token_accuracy"] <= 1.0
    assert set(logs) == {"loss", "flow_loss", "fast_ce_loss", "fast_token_accuracy"}
    # row 0's padded sub-chunk (its tokens and closing EOS) is not a target; its first sub-chunk is
    per_row = torch.bincount(out.fast_rows, minlength=3)
    first_sub = policy.layout.encode_subchunks(batch["action"][:1].numpy())[0][0]
    assert per_row[0] == len(first_sub) + 1
    assert per_row[1] == batch[ACTION_TOKEN_TARGET_KEY][1].sum()


def test_per_sample_reduction_matches_mean(setup) -> None:
    policy, batch = setup
    with torch.no_grad():
        torch.manual_seed(3)
        per_sample, _ = policy.forward(batch, reduction="none")
        torch.manual_seed(3)
        mean, _ = policy.forward(batch)
    assert per_sample.shape == (3,)
    out = run_model(policy, batch, seed=3)
    ce_rows = torch.stack([out.fast_ce[out.fast_rows == r].mean() for r in range(3)])
    torch.testing.assert_close(per_sample, ce_rows + out.flow_se[:, :, :4].mean(dim=(1, 2)), rtol=1e-5, atol=1e-6)
    assert mean.item() == pytest.approx(out.fast_ce.mean().item() + out.flow_se[:, :, :4].mean().item(), rel=1e-5)


def test_policy_tokenizes_targets_itself_when_the_batch_has_none(setup) -> None:
    """Batches from pi05's processors (e.g. ``--policy.pretrained_path`` of a pi05 checkpoint) carry no FAST
    tokens; the loss must be the same as with the FAST processor step."""
    policy, batch = setup
    bare = {k: v for k, v in batch.items() if k not in FAST_KEYS}
    with torch.no_grad():
        torch.manual_seed(2)
        with_step, _ = policy.forward(batch)
        torch.manual_seed(2)
        without, _ = policy.forward(bare)
    assert with_step.item() == pytest.approx(without.item(), rel=1e-6)


def test_full_vocabulary_cross_entropy_bounds_the_action_vocabulary_one(setup) -> None:
    policy, batch = setup
    with torch.no_grad():
        action = run_model(policy, batch)
        policy.config.fast_ce_vocabulary = "full"
        try:
            full = run_model(policy, batch)
        finally:
            policy.config.fast_ce_vocabulary = "action"
    assert full.fast_ce.shape == action.fast_ce.shape
    assert (full.fast_ce > action.fast_ce).all()


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(assets, setup) -> None:
    policy, batch = setup
    checkpointed, _ = build(assets, gradient_checkpointing=True)
    checkpointed.load_state_dict(policy.state_dict())
    grads = []
    for model in (policy, checkpointed):
        model.train()
        model.zero_grad(set_to_none=True)
        torch.manual_seed(4)
        loss, _ = model.forward(batch)
        loss.backward()
        grads.append((loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
    (loss_a, grad_a), (loss_b, grad_b) = grads
    torch.testing.assert_close(loss_a, loss_b)
    assert grad_a.keys() == grad_b.keys()
    for name in grad_a:
        torch.testing.assert_close(grad_a[name], grad_b[name], rtol=1e-4, atol=1e-6, msg=name)
    checkpointed.zero_grad(set_to_none=True)
    run_model(checkpointed, batch).flow_se.mean().backward()
    assert all(is_zero(p) for p in backbone_and_expert(checkpointed)[0].values())


def test_bfloat16_trains_with_the_stop_gradient(assets) -> None:
    policy, pre = build(assets, dtype="bfloat16")
    batch = pre(raw_batch(2))
    loss, logs = policy.forward(batch)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(torch.tensor(v)) for v in logs.values())
    policy.zero_grad(set_to_none=True)
    run_model(policy, batch).flow_se.mean().backward()
    backbone, expert = backbone_and_expert(policy)
    assert all(is_zero(p) for p in backbone.values())
    assert not is_zero(expert["action_in_proj.weight"])


def test_expert_state_token_reaches_the_expert_only_and_keeps_training_equal_to_sampling(assets) -> None:
    policy, pre = build(assets, expert_state_token=True)
    batch = pre(raw_batch(3))
    model = policy.model
    state = batch["observation.state"]
    padded = torch.nn.functional.pad(state, (0, policy.config.max_state_dim - state.shape[1]))
    with model.reading_state(padded):
        v_train, v_sample = training_and_sampling_velocity(policy, batch)
    torch.testing.assert_close(v_train, v_sample, rtol=1e-4, atol=1e-5)
    with model.reading_state(-padded):
        v_other, _ = training_and_sampling_velocity(policy, batch)
    assert not torch.allclose(v_train, v_other)  # the expert reads the state token
    with pytest.raises(RuntimeError, match="reading_state"):
        model.embed_suffix(torch.zeros(1, CHUNK, policy.config.max_action_dim), torch.tensor([0.5]))

    policy.zero_grad(set_to_none=True)
    policy.forward(batch)[0].backward()
    assert not is_zero(model.state_proj.weight)
    policy.zero_grad(set_to_none=True)
    with model.reading_state(padded):
        run_model(policy, batch).flow_se.mean().backward()
    backbone, _ = backbone_and_expert(policy)
    assert all(is_zero(p) for p in backbone.values())  # still insulated
    chunk = policy.predict_action_chunk(pre(raw_batch(2, with_action=False)))
    assert torch.isfinite(chunk).all()
