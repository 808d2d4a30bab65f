"""pi05_ki inference: pi05's flow sampling (bit-identical to core pi05 on the same weights), RTC, and greedy
FAST decoding consistent with the training forward (tiny variant, CPU)."""

from __future__ import annotations

import logging

import pytest
import torch
from ki_helpers import CHUNK, DIM, action_chunks, make_assets, make_config, raw_batch
from lerobot.policies.pi05 import PI05Config
from lerobot.policies.rtc.configuration_rtc import RTCConfig

from lerobot_fastplus.policies.pi05_ki.modeling_pi05_ki import PI05KIPolicy
from lerobot_fastplus.policies.pi05_ki.processor_pi05_ki import make_pi05_ki_pre_post_processors
from testing_support.core_tiny import core_pi05_tiny


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return make_assets(tmp_path_factory.mktemp("ki_inference"))


@pytest.fixture(scope="module")
def setup(assets) -> tuple[PI05KIPolicy, dict]:
    torch.manual_seed(0)
    config = make_config(assets, n_action_steps=5)
    pre, _ = make_pi05_ki_pre_post_processors(config, assets.stats)
    return PI05KIPolicy(config), pre(raw_batch(2, with_action=False))


def test_flow_sampling_and_select_action(setup) -> None:
    policy, obs = setup
    chunk = policy.predict_action_chunk(obs)
    assert chunk.shape == (2, CHUNK, DIM) and torch.isfinite(chunk).all()
    policy.reset()
    first = policy.select_action(obs)
    assert first.shape == (2, DIM)
    assert len(policy._action_queue) == 4  # n_action_steps=5: one popped, four queued


def test_sampling_is_core_pi05_on_the_same_weights(setup) -> None:
    policy, obs = setup
    core_config = PI05Config(device="cpu", chunk_size=CHUNK, n_action_steps=CHUNK, image_resolution=(64, 64))
    core_config.input_features, core_config.output_features = (
        policy.config.input_features,
        policy.config.output_features,
    )
    core = core_pi05_tiny(core_config)
    core.load_state_dict(policy.state_dict(), strict=True)
    torch.manual_seed(7)
    ours = policy.predict_action_chunk(obs)
    torch.manual_seed(7)
    theirs = core.predict_action_chunk(obs)
    assert torch.equal(ours, theirs)


def test_rtc_pulls_the_start_of_the_chunk_toward_the_previous_one(assets, setup) -> None:
    plain, obs = setup
    torch.manual_seed(0)
    config = make_config(assets, rtc_config=RTCConfig(execution_horizon=10, max_guidance_weight=10.0))
    policy = PI05KIPolicy(config)
    policy.load_state_dict(plain.state_dict())
    prev = torch.full((2, CHUNK, DIM), 0.5)
    torch.manual_seed(3)
    free = policy.predict_action_chunk(obs)
    torch.manual_seed(3)
    guided = policy.predict_action_chunk(obs, inference_delay=4, prev_chunk_left_over=prev)
    torch.manual_seed(3)
    assert torch.equal(free, plain.predict_action_chunk(obs))  # RTC without a previous chunk changes nothing
    assert torch.isfinite(guided).all() and guided.shape == free.shape
    start = slice(0, 4)
    assert (guided[:, start] - prev[:, start]).abs().mean() < 0.5 * (free[:, start] - prev[:, start]).abs().mean()


def test_fast_decoding_matches_teacher_forcing(setup) -> None:
    """Greedy FAST decoding with the KV cache picks, at every step, the argmax over the legal ids of the training
    forward fed with the decoded prefix, never an illegal one; the chunk it returns is complete, finite, has the
    dataset's shape and is recorded in ``last_decode``."""
    policy, obs = setup
    images, img_masks = policy._preprocess_images(obs)
    tokens, masks = obs["observation.language.tokens"], obs["observation.language.attention_mask"]
    with torch.no_grad():
        candidates = policy.model.decode_fast(images, img_masks, tokens, masks, policy.grammar)
        n = policy.layout.n_fast_ids
        generated = torch.where(candidates < n, candidates, candidates + 1)  # candidate -> layout id (BOS skipped)
        bos = torch.full_like(generated[:, :1], policy.layout.bos_id)
        ids = torch.cat([bos, generated], dim=1)
        x_t = torch.zeros(2, CHUNK, policy.config.max_action_dim)
        _, hidden = policy.model.velocity_and_fast_hidden(
            images, img_masks, tokens, masks, x_t, torch.ones(2), ids, torch.ones_like(ids, dtype=torch.bool)
        )
        logits = policy.model.fast_logits(hidden[:, :-1])
    grammar = policy.grammar
    state, legal = grammar.start(2), []
    for step in range(candidates.shape[1]):
        legal.append(grammar.legal(state))
        assert legal[-1].gather(1, candidates[:, step : step + 1]).all(), f"illegal id at step {step}"
        state = grammar.advance(state, candidates[:, step])
    assert grammar.done(state).all()
    index = logits.masked_fill(~torch.stack(legal, dim=1), float("-inf")).argmax(dim=-1)
    forced = torch.where(index < n, index, index + 1)
    eos = generated == policy.layout.eos_id
    first_eos = torch.where(eos.any(1), eos.float().argmax(1), torch.tensor(generated.shape[1] - 1))
    for row in range(2):
        stop = int(first_eos[row]) + 1
        assert torch.equal(forced[row, :stop], generated[row, :stop])
    assert generated.shape[1] <= grammar.max_length

    policy.config.action_decoding = "fast"
    try:
        chunk = policy.predict_action_chunk(obs)
    finally:
        policy.config.action_decoding = "flow"
    assert chunk.shape == (2, CHUNK, DIM) and torch.isfinite(chunk).all()
    assert policy.last_decode is not None and policy.last_decode.n_incomplete == 0
    assert policy.last_decode.parsed.step_valid.all()


def test_fast_decoding_never_acts_on_an_undecoded_chunk(setup, caplog) -> None:
    """Should a FAST decode ever miss steps (the exact grammar rules it out), pi05_ki follows pi0_fast's rule: hold
    the nearest decoded step, else the last executed action, else the normalised origin, and warn; never zeros
    passed off as a decoded chunk."""
    import logging

    policy, obs = setup
    n = policy.layout.n_fast_ids
    layout_ids = torch.as_tensor(policy.layout.build(action_chunks(2, 3)).ids[:, 1:])  # after BOS
    good = torch.where(layout_ids < n, layout_ids, layout_ids - 1)  # layout id -> candidate index
    cut = good.clone()
    cut[1, 1:] = n + 1  # row 1: one token, then EOS: nothing decodable
    original = policy.model.decode_fast
    policy.model.decode_fast = lambda *args, **kwargs: cut
    policy.config.action_decoding = "fast"
    try:
        policy.reset()
        with caplog.at_level(logging.WARNING):
            first = policy.predict_action_chunk(obs)
        assert policy.last_decode.n_incomplete == 1 and policy.last_decode.held_origin.tolist() == [False, True]
        assert "1 of 2 chunks decoded incompletely" in caplog.text
        # the next chunk of the episode: now row 0 decodes nothing and repeats its last executed action
        swapped = cut.flip(0)
        policy.model.decode_fast = lambda *args, **kwargs: swapped
        second = policy.predict_action_chunk(obs)
        last = policy.config.n_action_steps - 1
        assert first[0, last].abs().sum() > 0
        torch.testing.assert_close(second[0], first[0, last].expand(CHUNK, DIM))
        assert policy.last_decode.held_origin.tolist() == [False, False]
    finally:
        policy.model.decode_fast = original
        policy.config.action_decoding = "flow"
        policy.reset()


def test_reported_disagreement_is_the_two_decodings_distance_and_changes_no_action(setup, caplog) -> None:
    policy, obs = setup
    steps = policy.config.n_action_steps
    torch.manual_seed(3)
    plain = policy.predict_action_chunk(obs)
    policy.config.report_disagreement = True
    try:
        torch.manual_seed(3)
        with caplog.at_level(logging.INFO):
            flow = policy.predict_action_chunk(obs)
        disagreement = policy.last_disagreement
        assert torch.equal(flow, plain)  # the executed flow chunk is the one without the option
        policy.config.action_decoding = "fast"
        fast = policy.predict_action_chunk(obs)
        assert policy.last_decode.n_incomplete == 0
    finally:
        policy.config.report_disagreement = False
        policy.config.action_decoding = "flow"
    expected = (flow[:, :steps] - fast[:, :steps]).pow(2).mean(dim=(1, 2))
    assert disagreement.shape == (2,) and torch.isfinite(disagreement).all()
    torch.testing.assert_close(disagreement, expected)  # greedy FAST decoding is deterministic
    assert policy.last_disagreement.shape == (2,)  # acting on the FAST head, flow was decoded to compare
    assert "AR-vs-flow disagreement" in caplog.text


def test_flow_noise_scale_zero_is_deterministic_and_scales_the_starting_noise(setup) -> None:
    policy, obs = setup
    scale = policy.config.flow_noise_scale
    try:
        policy.config.flow_noise_scale = 0.0
        assert torch.equal(policy.predict_action_chunk(obs), policy.predict_action_chunk(obs))
        policy.config.flow_noise_scale = 0.5
        torch.manual_seed(3)
        halved = policy.predict_action_chunk(obs)
        torch.manual_seed(3)
        shape = (2, policy.config.chunk_size, policy.config.max_action_dim)
        noise = 0.5 * policy.model.sample_noise(shape, torch.device("cpu"))
        images, img_masks = policy._preprocess_images(obs)
        tokens, masks = obs["observation.language.tokens"], obs["observation.language.attention_mask"]
        explicit = policy.model.sample_actions(images, img_masks, tokens, masks, noise=noise)
        assert torch.equal(halved, explicit[:, :, : halved.shape[-1]])
        policy.config.flow_noise_scale = 1.0
        assert not torch.equal(policy.predict_action_chunk(obs), policy.predict_action_chunk(obs))
    finally:
        policy.config.flow_noise_scale = scale
