"""Every transform of the FAST tokenizer (DCT, wavelets, none): orthonormal with T coefficients per dimension, exact
round trips, decoding that never lies, files that say what they hold, and every consumer of codes working with it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import smooth_chunks
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lerobot.lerobot_types import TransitionKey
from lerobot.processor import PolicyProcessorPipeline
from lerobot.processor.converters import create_transition
from scipy.fft import dct

from lerobot_fastplus.fast import FastTokenizer, SplitLayout
from lerobot_fastplus.fast import transforms as tf
from lerobot_fastplus.fast.layout_grammar import LayoutGrammar
from lerobot_fastplus.fast_action_step import ACTION_TOKENS_KEY, FastActionTokenizerStep
from lerobot_fastplus.policies.common.decoding import ExactGrammar

TRANSFORMS = ["dct", "haar", "db2", "db4", "sym4", "none"]
HORIZONS = [1, 2, 3, 5, 7, 10, 16, 25, 50, 64]


def basis_matrix(transform: str, horizon: int) -> np.ndarray:
    """Row k: coefficient k of every unit impulse, i.e. the transform as a [T, T] matrix."""
    return tf.forward(np.eye(horizon)[None], transform)[0]


@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("horizon", HORIZONS)
def test_every_transform_is_orthonormal_with_t_coefficients(transform, horizon) -> None:
    matrix = basis_matrix(transform, horizon)
    assert matrix.shape == (horizon, horizon)
    np.testing.assert_allclose(matrix @ matrix.T, np.eye(horizon), atol=1e-10)
    x = np.random.default_rng(horizon).normal(size=(3, horizon, 4))
    coefficients = tf.forward(x, transform)
    assert coefficients.shape == x.shape and coefficients.dtype == np.float64
    np.testing.assert_allclose(tf.inverse(coefficients, transform), x, atol=1e-10)
    np.testing.assert_allclose(coefficients, np.einsum("kt,btd->bkd", matrix, x), atol=1e-10)  # per dimension


def test_dct_is_fasts_dct_bit_for_bit() -> None:
    x = smooth_chunks(20, 10, 5)
    np.testing.assert_array_equal(tf.forward(x, "dct"), dct(x, axis=1, norm="ortho"))


def test_haar_coefficients_by_hand() -> None:
    r = np.sqrt(0.5)
    a, b, c, d = 3.0, 1.0, -2.0, 5.0
    # even length: coarse to fine, [approximation of the approximations, its detail, details of the first level]
    four = tf.forward(np.array([a, b, c, d])[None, :, None], "haar")[0, :, 0]
    expected = [(a + b + c + d) / 2, (a + b - c - d) / 2, r * (a - b), r * (c - d)]
    np.testing.assert_allclose(four, expected)
    # odd length: the last value is passed on between the next level and this level's details
    three = tf.forward(np.array([a, b, c])[None, :, None], "haar")[0, :, 0]
    np.testing.assert_allclose(three, [r * (a + b), c, r * (a - b)])
    # a constant chunk: one coefficient per halving that is not odd, nothing in the details
    constant = tf.forward(np.ones((1, 16, 1)), "haar")[0, :, 0]
    np.testing.assert_allclose(constant, [4.0] + [0.0] * 15, atol=1e-12)


def test_check_transform_names_the_choices() -> None:
    assert tf.check_transform(" HAAR ") == "haar"
    assert tf.check_transform("db4") == "db4"
    for bad in ("wavelet", "bior2.2", "mexh", ""):
        with pytest.raises(ValueError, match=r"'dct'.*'none'.*orthogonal PyWavelets wavelet"):
            tf.check_transform(bad)


# ---------------------------------------------------------------------- the tokenizer with each transform


@pytest.fixture(scope="module")
def smooth() -> np.ndarray:
    return smooth_chunks(300, 10, 4, seed=7)


@pytest.fixture(scope="module", params=TRANSFORMS)
def tokenizer(request, smooth) -> FastTokenizer:
    return FastTokenizer.fit(smooth, vocab_size=600, transform=request.param)


@pytest.mark.parametrize("horizon", [1, 3, 10, 50])
@pytest.mark.parametrize("transform", TRANSFORMS)
def test_round_trip_error_is_bounded_by_the_rounding(transform, horizon) -> None:
    """Orthonormal + rounding to 1/scale: no coefficient is off by more than 0.5/scale, so MSE <= 1/(4 scale^2)."""
    chunks = smooth_chunks(120, horizon, 3, seed=horizon)
    tokenizer = FastTokenizer.fit(chunks, scale=10, vocab_size=600, transform=transform)
    codes = tokenizer.codes(chunks)
    assert codes.shape == (len(chunks), horizon * 3)
    expected = np.rint(tf.forward(chunks, transform) * 10).reshape(len(chunks), -1) - tokenizer.min_token
    np.testing.assert_array_equal(codes, expected)  # C order of [T, D]: all dimensions' first coefficient first
    decoded = tokenizer.decode(tokenizer.encode(chunks))
    assert decoded.valid.all()
    assert ((decoded.actions - chunks) ** 2).mean() <= 1 / (4 * 10**2)
    np.testing.assert_array_equal(tokenizer.codes(decoded.actions), codes)  # a valid decode re-encodes exactly


def test_transforms_quantise_different_coefficients(smooth) -> None:
    codes = {t: FastTokenizer.fit(smooth, vocab_size=600, transform=t).codes(smooth[:5]) for t in TRANSFORMS}
    assert len({c.tobytes() for c in codes.values()}) == len(TRANSFORMS)


def test_files_record_the_transform_and_dct_files_are_unchanged(tokenizer, smooth, tmp_path) -> None:
    directory = tokenizer.save(tmp_path / "tok")
    config = json.loads((directory / "processor_config.json").read_text())
    if tokenizer.transform == "dct":
        assert "transform" not in config  # the published format, key for key
    else:
        assert config["transform"] == tokenizer.transform
    ids = tokenizer.encode(smooth)
    rebuilt = FastTokenizer.from_dict(json.loads(json.dumps(tokenizer.to_dict())))
    for again in (FastTokenizer.load(directory), rebuilt):
        assert again.transform == tokenizer.transform
        assert again.encode(smooth) == ids
        np.testing.assert_array_equal(again.decode(ids).actions, tokenizer.decode(ids).actions)


def test_an_unknown_transform_in_the_files_is_refused(tokenizer, tmp_path) -> None:
    directory = tokenizer.save(tmp_path / "tok")
    config = json.loads((directory / "processor_config.json").read_text())
    (directory / "processor_config.json").write_text(json.dumps({**config, "transform": "fourier-bessel"}))
    with pytest.raises(ValueError, match=r"processor_config\.json: unknown transform 'fourier-bessel'"):
        FastTokenizer.load(directory)
    with pytest.raises(ValueError, match="unknown transform"):
        FastTokenizer.from_dict({**tokenizer.to_dict(), "transform": "fourier-bessel"})


def test_core_autoprocessor_refuses_a_non_dct_tokenizer(smooth, tmp_path) -> None:
    """Core pi0_fast decodes with its own inverse DCT: a wavelet tokenizer there would give wrong actions."""
    from transformers import AutoProcessor

    haar = FastTokenizer.fit(smooth, vocab_size=600, transform="haar").save(tmp_path / "haar")
    with pytest.raises(ValueError, match=r"'haar' transform, not FAST's DCT.*--transform=dct"):
        AutoProcessor.from_pretrained(str(haar), trust_remote_code=True)
    dct_dir = FastTokenizer.fit(smooth, vocab_size=600).save(tmp_path / "dct")
    processor = AutoProcessor.from_pretrained(str(dct_dir), trust_remote_code=True)
    assert processor(smooth[:3]) == FastTokenizer.load(dct_dir).encode(smooth[:3])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(st.integers(-3, 620), max_size=60), max_size=5))
def test_random_ids_never_decode_to_garbage(tokenizer, ids) -> None:
    result = tokenizer.decode(ids)
    assert result.actions.shape == (len(ids), 10, 4) and np.isfinite(result.actions).all()
    for ok, reason, actions in zip(result.valid, result.reasons, result.actions, strict=True):
        assert ok == (reason is None)
        if ok:
            again = tokenizer.decode(tokenizer.encode(actions[None])).actions[0]
            np.testing.assert_allclose(again, actions, atol=1e-9)
        else:
            assert not actions.any()


def test_fuzzed_right_length_sequences_are_valid_exactly_when_in_range(tokenizer) -> None:
    rng = np.random.default_rng(1)
    byte_id = {raw: i for i, raw in enumerate(tokenizer.token_bytes) if raw is not None and len(raw) == 1}
    chars = []
    for _ in range(1_000):
        codes = rng.integers(0, tokenizer.max_code + 1, size=40)
        if rng.random() < 0.5:
            codes[rng.integers(0, 40)] = rng.choice([tokenizer.max_code + 1, 0x800, 0xE000, 0x10000])
        chars.append(codes)
    ids = [[byte_id[bytes([b])] for b in "".join(map(chr, codes)).encode()] for codes in chars]
    ids += [good[:-1] for good in tokenizer.encode(smooth_chunks(20, 10, 4, seed=9), clip=True)]  # cut short
    result = tokenizer.decode(ids, time_horizon=10, action_dim=4)
    in_range = [codes.max() <= tokenizer.max_code for codes in chars] + [False] * 20
    assert result.valid.tolist() == in_range
    valid = result.actions[result.valid]
    np.testing.assert_array_equal(tokenizer.codes(valid), np.stack(chars)[np.array(in_range[:1_000])])
    bound = max(-tokenizer.min_token, tokenizer.max_token) / tokenizer.scale
    assert np.abs(valid).max() <= bound * np.sqrt(10)  # an orthonormal inverse of in-range codes


# ---------------------------------------------------------------------- consumers of codes


def test_split_layout_with_a_ragged_last_subchunk(tokenizer) -> None:
    chunks = smooth_chunks(40, 25, 4, seed=11)
    layout = SplitLayout(tokenizer, 25, 10)  # sub-chunks of 10, 10 and 5 steps
    batch = layout.build(chunks, clip=True)
    parsed = layout.parse(batch.ids, action_dim=4)
    assert parsed.step_valid.all() and parsed.ended.all()
    pieces = [tokenizer.encode(chunks[:, s:e], clip=True) for s, e in layout.bounds]
    expected = np.concatenate(
        [tokenizer.decode(ids, time_horizon=e - s).actions for ids, (s, e) in zip(pieces, layout.bounds, strict=True)],
        axis=1,
    )
    np.testing.assert_array_equal(parsed.actions, expected)
    for start, stop in layout.bounds:  # where nothing was clipped, only the rounding is lost
        exact = tokenizer.out_of_range(chunks[:, start:stop]) == 0
        assert exact.sum() >= 10
        error = parsed.actions[exact, start:stop] - chunks[exact, start:stop]
        assert (error**2).mean() <= 1 / (4 * tokenizer.scale**2)


def test_exact_grammar_walks_decode_completely(tokenizer) -> None:
    layout = SplitLayout(tokenizer, 25, 10)
    grammar = ExactGrammar(LayoutGrammar.build(layout, 4), "cpu")
    rng = np.random.default_rng(3)
    state, steps = grammar.start(8), []
    for _ in range(grammar.max_length):
        legal = grammar.legal(state).numpy()
        chosen = np.array([rng.choice(np.flatnonzero(row)) for row in legal])
        steps.append(chosen)
        state = grammar.advance(state, torch.as_tensor(chosen))
        if grammar.done(state).all():
            break
    assert grammar.done(state).all()
    candidates = np.stack(steps, axis=1)
    local = np.where(candidates < layout.n_fast_ids, candidates, candidates + 1)  # candidates skip BOS
    parsed = layout.parse(local, action_dim=4)
    assert parsed.step_valid.all() and parsed.ended.all(), parsed.reasons
    assert (layout.out_of_range(parsed.actions) == 0).all()


def test_processor_step_tokenizes_and_survives_its_json(tokenizer, tmp_path) -> None:
    chunks = smooth_chunks(6, 20, 4, seed=12)
    step = FastActionTokenizerStep(tokenizer=tokenizer.to_dict(), chunk_size=20, split_every=10)
    transition = create_transition(action=torch.tensor(chunks, dtype=torch.float32))
    ids = step(transition)[TransitionKey.COMPLEMENTARY_DATA][ACTION_TOKENS_KEY]
    expected = SplitLayout(tokenizer, 20, 10).build(chunks.astype(np.float32), clip=True).ids
    np.testing.assert_array_equal(ids.numpy(), expected)
    pipeline = PolicyProcessorPipeline(steps=[step], name="policy_preprocessor")
    pipeline.save_pretrained(tmp_path / "ckpt", config_filename="pre.json")
    reloaded = PolicyProcessorPipeline.from_pretrained(tmp_path / "ckpt", config_filename="pre.json")
    assert reloaded.steps[0].fast_tokenizer.transform == tokenizer.transform
    again = reloaded.steps[0](transition)[TransitionKey.COMPLEMENTARY_DATA][ACTION_TOKENS_KEY]
    assert torch.equal(ids, again)
