"""pi0_fast model: target-only loss (and parity with core's loss), exact-grammar decoding, KV-cache identity,
decode-failure reporting and the fill rule (tiny variant, CPU)."""

from __future__ import annotations

import logging
from contextlib import contextmanager, nullcontext

import numpy as np
import pytest
import torch
from lerobot.policies.common.vla_utils import make_att_2d_masks
from lerobot.policies.factory import make_pre_post_processors
from lerobot.policies.pi0_fast.configuration_pi0_fast import PI0FastConfig as CorePI0FastConfig
from lerobot.utils.constants import ACTION_TOKEN_MASK, ACTION_TOKENS, OBS_LANGUAGE_ATTENTION_MASK, OBS_LANGUAGE_TOKENS
from pi0_fast_helpers import CHUNK, DIM, RES, SPLIT, action_chunks, core_tiny_model, make_assets, make_config, raw_batch
from transformers import AutoTokenizer

from lerobot_fastplus.fast_action_step import ACTION_TOKEN_TARGET_KEY, ACTION_TOKEN_VALID_KEY, ACTION_TOKENS_KEY
from lerobot_fastplus.policies.pi0_fast.modeling_pi0_fast import PI0FastPolicy


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return make_assets(tmp_path_factory.mktemp("pi0_fast_model"))


@pytest.fixture(scope="module")
def policy(assets):
    torch.manual_seed(0)
    return PI0FastPolicy(make_config(assets))


@pytest.fixture(scope="module")
def processors(assets, policy):
    return make_pre_post_processors(policy.config, dataset_stats=assets.stats)


def observation(processors, batch_size: int, seed: int = 20) -> dict:
    return processors[0](raw_batch(batch_size, seed=seed, with_action=False))


def generate(policy: PI0FastPolicy, obs: dict, **kwargs) -> torch.Tensor:
    images, img_masks = policy._preprocess_images(obs)
    tokens, masks = obs[OBS_LANGUAGE_TOKENS], obs[OBS_LANGUAGE_ATTENTION_MASK]
    return policy.model.generate(images, img_masks, tokens, masks, policy.grammar, **kwargs)


def decodes_completely(policy: PI0FastPolicy, candidates: list[int]) -> bool:
    """Independent check: the layout parse of the generated sequence recovers every step of the chunk."""
    n = policy.model.n_fast
    local = [c if c < n else c + 1 for c in candidates]
    return bool(policy.layout.parse([local], action_dim=DIM).step_valid.all())


# ---------------------------------------------------------------------------------------------------- loss
def test_loss_is_next_token_ce_over_the_action_candidates_at_target_positions(assets, policy, processors) -> None:
    batch = processors[0](raw_batch(3, seed=1))
    batch["action_is_pad"] = torch.zeros(3, CHUNK, dtype=torch.bool)
    loss, logs = policy.forward(batch)
    assert set(logs) == {"loss", "ce_loss", "token_accuracy"}
    assert 0.0 <= logs["token_accuracy"] <= 1.0

    # reference: logits at *every* action position over the candidates, masked afterwards
    local, valid, target = (batch[k] for k in (ACTION_TOKENS_KEY, ACTION_TOKEN_VALID_KEY, ACTION_TOKEN_TARGET_KEY))
    images, img_masks = policy._preprocess_images(batch)
    hidden = policy.model.action_hidden(
        images,
        img_masks,
        batch[OBS_LANGUAGE_TOKENS],
        batch[OBS_LANGUAGE_ATTENTION_MASK],
        policy.model.local_to_vocab[local],
        valid,
    )
    logits = hidden @ policy.model.lm_head_weight()[policy.model.candidate_vocab].T
    n = policy.model.n_fast
    labels = torch.where(local < n, local, local - 1)
    ce = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:], reduction="none")
    mask = target[:, 1:].float()
    torch.testing.assert_close(loss, (ce * mask).sum() / mask.sum())

    # padding never counts: the same targets padded to a longer sequence give the same loss
    padded = dict(batch)
    extra = 7
    padded[ACTION_TOKENS_KEY] = torch.nn.functional.pad(local, (0, extra), value=n + 2)
    for key in (ACTION_TOKEN_VALID_KEY, ACTION_TOKEN_TARGET_KEY):
        padded[key] = torch.nn.functional.pad(batch[key], (0, extra), value=False)
    torch.testing.assert_close(policy.forward(padded)[0], loss)

    per_sample, _ = policy.forward(batch, reduction="none")
    assert per_sample.shape == (3,)


def test_gradients_reach_only_the_candidate_and_input_rows_of_the_tied_head(policy, processors) -> None:
    """Split layout: the head is the input embedding. The CE reaches every candidate row (softmax over the
    candidates) and no other row but those of the ids fed as input; core's untied lm_head gets no gradient."""
    policy.zero_grad(set_to_none=True)
    batch = processors[0](raw_batch(2, seed=2))
    loss, _ = policy.forward(batch)
    loss.backward()
    grad = policy.model.lm_head_weight().grad
    touched = set(grad.abs().sum(dim=1).nonzero()[:, 0].tolist())
    candidates = set(policy.model.candidate_vocab.tolist())
    inputs = {*batch[OBS_LANGUAGE_TOKENS].flatten().tolist()}
    inputs |= {*policy.model.local_to_vocab[batch[ACTION_TOKENS_KEY]].flatten().tolist()}
    assert candidates <= touched <= candidates | inputs
    assert policy.model.paligemma_with_expert.paligemma.lm_head.weight.grad is None
    policy.zero_grad(set_to_none=True)


def test_teacher_forcing_equals_one_language_model_pass(policy, processors) -> None:
    """The training layers (block attention, action outputs only in the last layer) give the action tokens' hidden
    states of one language-model forward over the joint sequence."""
    batch = processors[0](raw_batch(3, seed=5))
    images, img_masks = policy._preprocess_images(batch)
    tokens, masks = batch[OBS_LANGUAGE_TOKENS], batch[OBS_LANGUAGE_ATTENTION_MASK]
    ids = policy.model.local_to_vocab[batch[ACTION_TOKENS_KEY]]
    valid = batch[ACTION_TOKEN_VALID_KEY].clone()
    valid[0, -3:] = False  # padded action positions too
    with torch.no_grad():
        hidden = policy.model.action_hidden(images, img_masks, tokens, masks, ids, valid)
        embs, pad, ar = policy.model.embed_sequence(images, img_masks, tokens, masks, ids)
        pad[:, -ids.shape[1] :] = valid
        joint, _ = policy.model._backbone(embs, make_att_2d_masks(pad, ar), torch.cumsum(pad, dim=1) - 1)
    # padded positions (no target, no key anyone sees) attend to nothing: their values are arbitrary
    torch.testing.assert_close(hidden[valid], joint[:, -ids.shape[1] :][valid], rtol=1e-4, atol=1e-5)


def test_state_only_policy_trains_and_decodes(assets) -> None:
    torch.manual_seed(0)
    config = make_config(assets, camera=False)
    policy = PI0FastPolicy(config)
    pre, _ = make_pre_post_processors(config, dataset_stats=assets.stats)
    raw = raw_batch(2, seed=3)
    raw.pop("observation.images.cam")
    loss, _ = policy.forward(pre(raw))
    loss.backward()
    raw.pop("action"), raw.pop("action_is_pad")
    chunk = policy.predict_action_chunk(pre(raw))
    assert chunk.shape == (2, CHUNK, DIM) and torch.isfinite(chunk).all()


def test_core_layout_loss_equals_core_pi0_fasts_loss(assets) -> None:
    """Same weights, same core-layout batch (``<bos> Action : FAST... | <eos>``, zero padding): same CE."""
    torch.manual_seed(0)
    core_config = CorePI0FastConfig(device="cpu", image_resolution=(RES, RES), chunk_size=CHUNK, n_action_steps=CHUNK)
    core = core_tiny_model(core_config)
    policy = PI0FastPolicy(make_config(assets, action_layout="core"))
    policy.model.load_state_dict(core.state_dict(), strict=True)

    text = AutoTokenizer.from_pretrained(assets.text_dir)
    fast_ids = policy.fast_tokenizer.encode(action_chunks(2, 4))
    rows = [
        [text.bos_token_id, *text.encode("Action: ", add_special_tokens=False)]
        + [policy.config.fast_id_base - f for f in ids]
        + [*text.encode("|", add_special_tokens=False), text.eos_token_id]
        for ids in fast_ids
    ]
    width = 64
    tokens = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    mask = torch.tensor([[True] * len(r) + [False] * (width - len(r)) for r in rows])
    obs = processors_for(policy, assets)(raw_batch(2, seed=4, with_action=False))
    batch = {**obs, ACTION_TOKENS: tokens, ACTION_TOKEN_MASK: mask}
    ours, logs = policy.forward(batch)
    images, img_masks = policy._preprocess_images(obs)
    theirs = core.forward(images, img_masks, obs[OBS_LANGUAGE_TOKENS], obs[OBS_LANGUAGE_ATTENTION_MASK], tokens, mask)
    torch.testing.assert_close(ours, theirs["loss"], rtol=1e-4, atol=1e-5)
    assert logs["ce_loss"] == pytest.approx(theirs["ce_loss"].item(), rel=1e-4)


def processors_for(policy: PI0FastPolicy, assets):
    """The split-layout preprocessor (its prompt/tokens suffice for a loss comparison on observations)."""
    config = make_config(assets)
    return make_pre_post_processors(config, dataset_stats=assets.stats)[0]


# ---------------------------------------------------------------------------------------------------- decoding
@contextmanager
def steered(policy: PI0FastPolicy, signs: list[float]):
    """Row b's final hidden state becomes ``signs[b] * u`` and SPLIT, EOS and some text ids score ``10 * u``: with
    sign +1 an unconstrained decoder would emit separators (or text) at every step, with -1 never."""
    lm = policy.model.paligemma_with_expert.paligemma.model.language_model
    weight = policy.model.lm_head_weight()
    n = policy.model.n_fast
    rows = [*policy.model.candidate_vocab[n:].tolist(), 0, 1, 2, 100]
    saved = weight[rows].clone()
    u = torch.nn.functional.normalize(torch.randn(weight.shape[1], generator=torch.Generator().manual_seed(0)), dim=0)
    u = u * weight.shape[1] ** 0.5

    def hook(module, args, output):
        hidden, gate = output
        direction = torch.tensor(signs, dtype=hidden.dtype)[:, None, None] * u
        return direction.expand_as(hidden).clone(), gate

    handle = lm.norm.register_forward_hook(hook)
    with torch.no_grad():
        weight[rows] = 10 * u
    try:
        yield
    finally:
        handle.remove()
        with torch.no_grad():
            weight[rows] = saved


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("steer", [False, True])
def test_constrained_sampling_never_emits_an_illegal_id(policy, processors, seed, steer) -> None:
    obs = observation(processors, 3, seed=10 + seed)
    n, base = policy.model.n_fast, policy.config.fast_id_base
    for temperature in (0.7, 5.0):
        torch.manual_seed(seed)
        with steered(policy, [1.0, 1.0, 1.0]) if steer else nullcontext():
            generated = generate(policy, obs, temperature=temperature)
        vocab = policy.model.candidate_vocab[generated]
        is_fast = (vocab <= base) & (vocab > base - n)
        is_separator = (vocab == policy.config.action_split_token_id) | (vocab == policy.config.action_eos_token_id)
        assert bool((is_fast | is_separator).all())  # never a text id, BOS or an id outside the vocabulary
        assert generated.shape[1] <= policy.grammar.max_length
        for row in generated.tolist():
            assert decodes_completely(policy, row)
            if steer:  # separators win wherever legal: exactly once per sub-chunk, then EOS padding
                assert row.count(n) == policy.layout.n_subchunks - 1 and row[-1] == n + 1


def test_greedy_tokens_are_identical_with_and_without_kv_cache(policy, processors) -> None:
    obs = observation(processors, 3, seed=30)
    with_cache = generate(policy, obs, use_kv_cache=True)
    without = generate(policy, obs, use_kv_cache=False)
    assert with_cache.shape[0] == 3 and with_cache.shape[1] <= policy.grammar.max_length
    assert torch.equal(with_cache, without)
    assert len(set(map(tuple, with_cache.tolist()))) == 3  # the rows really differ


def test_rows_stop_at_eos_and_the_batch_when_all_are_done(policy, processors) -> None:
    obs = observation(processors, 2, seed=40)
    eos = policy.model.n_fast + 1
    with steered(policy, [1.0, -1.0]):
        mixed = generate(policy, obs)
    ends = [row.index(eos) for row in mixed.tolist()]
    assert ends[0] != ends[1]  # the rows finish at different steps
    for row, end in zip(mixed.tolist(), ends, strict=True):
        assert row[end:] == [eos] * (len(row) - end)  # a finished row only pads
    assert mixed.shape[1] == max(ends) + 1  # the batch stops once every row is done


# ---------------------------------------------------------------------------------------------------- failures
def fake_generate(sequences: list[list[int]]):
    width = max(len(s) for s in sequences)
    padded = torch.tensor([s + [s[-1]] * (width - len(s)) for s in sequences])
    return lambda *args, **kwargs: padded


def test_incomplete_decodes_are_reported_and_filled_by_the_documented_rule(policy, processors, caplog) -> None:
    n = policy.model.n_fast
    chunk = action_chunks(1, 5)[0]
    first, second = (policy.fast_tokenizer.encode(chunk[s : s + SPLIT])[0] for s in (0, SPLIT))
    sequences = [
        [*first, n, *second, n + 1],  # complete
        [*first, n, *second[:-1]],  # cut short: second sub-chunk lost
        [first[0]],  # nothing decodable
    ]
    obs = observation(processors, 3)
    policy.reset()
    original = policy.model.generate
    policy.model.generate = fake_generate(sequences)
    try:
        with caplog.at_level(logging.WARNING):
            actions = policy.predict_action_chunk(obs).numpy()
        report = policy.last_decode
        assert report.missing_steps.tolist() == [0, SPLIT, CHUNK]
        assert report.n_incomplete == 2 and report.held_origin.tolist() == [False, False, True]
        assert "2 of 3 chunks decoded incompletely" in caplog.text and "1 held the normalised origin" in caplog.text
        np.testing.assert_allclose(actions[0], chunk, atol=0.06)
        np.testing.assert_allclose(actions[1, :SPLIT], chunk[:SPLIT], atol=0.06)
        np.testing.assert_array_equal(actions[1, SPLIT:], np.repeat(actions[1, SPLIT - 1 : SPLIT], SPLIT, axis=0))
        assert not actions[2].any()

        # next chunk of the episode: a row with nothing decoded repeats the last action executed
        policy.model.generate = fake_generate([sequences[2], sequences[0], sequences[2]])
        again = policy.predict_action_chunk(obs).numpy()
        last = policy.config.n_action_steps - 1
        np.testing.assert_array_equal(again[0], np.repeat(actions[0, last][None], CHUNK, axis=0))
        assert policy.last_decode.held_origin.tolist() == [False, False, False]
    finally:
        policy.model.generate = original
        policy.reset()


def test_the_decoded_horizon_is_chunk_size_not_n_action_steps(assets, processors) -> None:
    torch.manual_seed(0)
    policy = PI0FastPolicy(make_config(assets, n_action_steps=5))
    obs = observation(processors, 2)
    assert policy.predict_action_chunk(obs).shape == (2, CHUNK, DIM)
    policy.reset()
    assert policy.select_action(obs).shape == (2, DIM)
    assert len(policy._action_queue) == 4


def test_a_core_checkpoints_small_step_limit_gives_way_to_the_grammars_bound(assets, caplog) -> None:
    """Core's default max_decoding_steps (256) budgeted grammar-less decoding; below the exact bound it would cut
    chunks short, so a core-layout policy decodes up to the bound and says so. A split-layout policy refuses it."""
    with caplog.at_level(logging.WARNING):
        policy = PI0FastPolicy(make_config(assets, action_layout="core", max_decoding_steps=5))
    assert policy.max_decoding_steps == policy.grammar.max_length > 5
    assert "max_decoding_steps=5 (core checkpoint) is below the exact grammar's bound" in caplog.text
    with pytest.raises(ValueError, match="max_decoding_steps=5 is below"):
        PI0FastPolicy(make_config(assets, max_decoding_steps=5))
