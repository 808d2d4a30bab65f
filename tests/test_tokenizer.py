"""FAST tokenizer: parity with the reference, statelessness, robust decoding, clear errors."""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import real_action_chunks, smooth_chunks
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lerobot_fastplus.fast import FastTokenizer


def reference_processor_class():
    from lerobot.policies.molmoact2.molmoact2_hf_model.action_tokenizer import UniversalActionProcessor

    return UniversalActionProcessor


def published_layout(directory, reference) -> None:
    """Write a reference-fitted tokenizer the way the published FAST+ repository lays it out."""
    reference.tokenizer.save_pretrained(directory)
    config = {
        "action_dim": None,
        "auto_map": {"AutoProcessor": "processing_action_tokenizer.UniversalActionProcessor"},
        "min_token": reference.min_token,
        "processor_class": "UniversalActionProcessor",
        "scale": reference.scale,
        "time_horizon": None,
        "vocab_size": reference.vocab_size,
    }
    (directory / "processor_config.json").write_text(json.dumps(config))


@pytest.fixture(scope="module")
def reference_fitted(tmp_path_factory, smooth):
    """A tokenizer fitted by the reference implementation, saved in the published layout."""
    processor_cls = reference_processor_class()
    logging.disable(logging.WARNING)
    try:
        reference = processor_cls.fit(list(smooth), vocab_size=512)
    finally:
        logging.disable(logging.NOTSET)
    directory = tmp_path_factory.mktemp("fast_published")
    published_layout(directory, reference)
    return directory, processor_cls.from_pretrained_local(str(directory))


def assert_same_as_reference(ours: FastTokenizer, reference, chunks: np.ndarray) -> None:
    horizon, dim = chunks.shape[1:]
    ids = ours.encode(chunks)
    assert ids == [list(x) for x in reference(chunks)]
    decoded = ours.decode(ids, time_horizon=horizon, action_dim=dim)
    assert decoded.valid.all()
    np.testing.assert_allclose(decoded.actions, reference.decode(ids, time_horizon=horizon, action_dim=dim), atol=1e-9)


def test_reference_files_give_identical_ids_and_actions(reference_fitted, smooth):
    directory, reference = reference_fitted
    ours = FastTokenizer.load(directory)
    assert ours.min_token == reference.min_token and ours.scale == reference.scale
    assert ours.time_horizon is None and ours.action_dim is None  # published FAST+ leaves them unset
    assert_same_as_reference(ours, reference, smooth[:200])
    # Unseen chunks: the reference-fitted vocabulary only covers coefficients seen in fitting, so keep
    # the chunks it can represent (ours refuses the others instead of dropping characters).
    fresh = smooth_chunks(100, 10, 7, seed=2)
    encodable = np.stack([c for c in fresh if encodes(ours, c)])
    assert len(encodable) > 50
    assert_same_as_reference(ours, reference, encodable)


def encodes(tokenizer: FastTokenizer, chunk: np.ndarray) -> bool:
    try:
        tokenizer.encode(chunk)
    except ValueError:
        return False
    return True


def test_our_files_load_in_reference(tmp_path, tokenizer, smooth):
    tokenizer.save(tmp_path / "tok")
    reference = reference_processor_class().from_pretrained_local(str(tmp_path / "tok"))
    assert reference.min_token == tokenizer.min_token and reference.vocab_size == tokenizer.vocab_size
    assert_same_as_reference(FastTokenizer.load(tmp_path / "tok"), reference, smooth_chunks(300, 10, 7, seed=3))


@pytest.mark.parametrize(
    ("name", "horizon", "quantiles"), [("so101_record_test", 10, "stats"), ("g1_bottle_pick", 10, "frames")]
)
def test_parity_on_real_chunks(tmp_path, name, horizon, quantiles):
    chunks = real_action_chunks(name, horizon, stride=3, quantiles=quantiles)
    ours = FastTokenizer.fit(chunks, vocab_size=1024)
    ours.save(tmp_path / "tok")
    reference = reference_processor_class().from_pretrained_local(str(tmp_path / "tok"))
    assert_same_as_reference(FastTokenizer.load(tmp_path / "tok"), reference, chunks)
    decoded = ours.decode(ours.encode(chunks))
    assert ((decoded.actions - chunks) ** 2).mean() < 1e-3


def test_published_directory_loads_without_remote_code(reference_fitted):
    directory, _ = reference_fitted
    config = json.loads((directory / "processor_config.json").read_text())
    assert "auto_map" in config  # the file that would need trust_remote_code through AutoProcessor
    assert FastTokenizer.load(str(directory)).vocab_size == 512


def test_save_load_roundtrip_and_dict(tmp_path, tokenizer, smooth):
    tokenizer.save(tmp_path / "a")
    loaded = FastTokenizer.load(tmp_path / "a")
    assert (loaded.time_horizon, loaded.action_dim) == (10, 7)
    rebuilt = FastTokenizer.from_dict(json.loads(json.dumps(tokenizer.to_dict())))
    assert loaded.encode(smooth) == tokenizer.encode(smooth) == rebuilt.encode(smooth)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "processing_fastplus.py",
        "processor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]


def test_no_hidden_state_between_calls(tokenizer):
    long_chunks = smooth_chunks(5, 20, 7, seed=4)
    short_chunks = smooth_chunks(5, 10, 7, seed=5)
    long_ids = tokenizer.encode(long_chunks, clip=True)
    tokenizer.encode(short_chunks)  # a call with another shape must not change how long_ids decode
    first = tokenizer.decode(long_ids, time_horizon=20, action_dim=7)
    assert (tokenizer.time_horizon, tokenizer.action_dim) == (10, 7)
    assert first.actions.shape == (5, 20, 7) and first.valid.all()
    bare = FastTokenizer(tokenizer.bpe, scale=tokenizer.scale, min_token=tokenizer.min_token)
    with pytest.raises(ValueError, match="time_horizon"):
        bare.decode(long_ids)


def test_thread_safe(tokenizer):
    batches = [smooth_chunks(64, 10 + 5 * (i % 3), 7, seed=10 + i) for i in range(12)]
    serial = [tokenizer.decode(tokenizer.encode(b, clip=True), time_horizon=b.shape[1]).actions for b in batches]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(
            pool.map(
                lambda b: tokenizer.decode(tokenizer.encode(b, clip=True), time_horizon=b.shape[1]).actions, batches
            )
        )
    for a, b in zip(serial, threaded, strict=True):
        np.testing.assert_array_equal(a, b)


def test_single_chunk_and_empty_batch(tokenizer, smooth):
    assert tokenizer.encode(smooth[0]) == tokenizer.encode(smooth[:1])
    empty = tokenizer.decode([])
    assert empty.actions.shape == (0, 10, 7) and empty.n_invalid == 0


# ---------------------------------------------------------------------- decoding never lies


def test_decode_flags_bad_sequences(tokenizer, smooth):
    good = tokenizer.encode(smooth[:1])[0]
    multi_byte = next(
        i for i in range(tokenizer.num_ids) if (b := tokenizer._token_bytes[i]) and len(b) == 1 and b[0] >= 0xC0
    )
    cases = {
        "valid": good,
        "empty": [],
        "negative id": [*good[:-1], -1],
        "id too large": [*good, tokenizer.num_ids],
        "truncated": good[:-1],
        "extra tokens": good + good[:1],
        "split character": [*good, multi_byte],
        "float ids": [float(t) + 0.5 for t in good],
    }
    result = tokenizer.decode(list(cases.values()))
    assert result.actions.shape == (len(cases), 10, 7) and np.isfinite(result.actions).all()
    assert result.valid.tolist() == [True] + [False] * (len(cases) - 1)
    assert result.n_invalid == len(cases) - 1
    for name, reason, row in zip(cases, result.reasons, result.actions, strict=True):
        if name != "valid":
            assert reason, name
            assert not row.any(), name
    assert "multi-byte" in result.reasons[list(cases).index("split character")]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(st.integers(-5, 600), max_size=40), max_size=6))
def test_decode_property_random_ids(tokenizer, ids):
    result = tokenizer.decode(ids)
    assert result.actions.shape == (len(ids), 10, 7)
    assert np.isfinite(result.actions).all()
    assert len(result.reasons) == len(ids)
    for seq, ok, reason, actions in zip(ids, result.valid, result.reasons, result.actions, strict=True):
        assert ok == (reason is None)
        if ok:
            # a valid decode is exact: its coefficients re-encode to themselves
            assert tokenizer.decode(tokenizer.encode(actions[None])).actions[0] == pytest.approx(actions, abs=1e-9)
            assert all(0 <= t < tokenizer.num_ids for t in seq)
        else:
            assert not actions.any()


def test_every_prefix_of_a_sequence_is_flagged(tokenizer, smooth):
    ids = tokenizer.encode(smooth[:20])
    for seq in ids:
        prefixes = [seq[:k] for k in range(len(seq))]
        assert not tokenizer.decode(prefixes).valid.any()


# ---------------------------------------------------------------------- bad input is refused clearly


@pytest.mark.parametrize(
    ("chunks", "message"),
    [
        (np.full((20, 10, 3), np.nan), "NaN or inf"),
        (np.full((20, 10, 3), np.inf), "NaN or inf"),
        (np.zeros((20, 30)), r"\[batch, time, action_dim\]"),
        (np.zeros((2, 20, 10, 3)), r"\[batch, time, action_dim\]"),
        (np.zeros((3, 10, 3)), "at least 8"),
        (smooth_chunks(50, 10, 3) * 200, "vocab_size"),
    ],
)
def test_fit_rejects_bad_input(chunks, message):
    with pytest.raises(ValueError, match=message):
        FastTokenizer.fit(chunks, vocab_size=1024)


def test_fit_rejects_too_small_vocab(smooth):
    with pytest.raises(ValueError, match=r"vocab_size=200 leaves no room"):
        FastTokenizer.fit(smooth, vocab_size=200)


def test_encode_refuses_unnormalised_actions_and_clips_on_request(tokenizer, smooth):
    raw = smooth[:4] * 90.0  # e.g. joint angles in degrees, never normalised
    with pytest.raises(ValueError, match="Normalise actions"):
        tokenizer.encode(raw)
    with pytest.raises(ValueError, match="NaN"):
        tokenizer.encode(np.where(smooth[:2] > 0, np.nan, smooth[:2]))
    with pytest.raises(ValueError, match=r"\[batch, time, action_dim\]"):
        tokenizer.encode(np.zeros(10))
    clipped = tokenizer.decode(tokenizer.encode(raw, clip=True))
    assert clipped.valid.all()
    assert (tokenizer.codes(raw, clip=True) >= 0).all()


def test_load_rejects_wrong_directories(tmp_path):
    with pytest.raises(ValueError, match=r"missing processor_config\.json, tokenizer\.json"):
        FastTokenizer.load(tmp_path)
    (tmp_path / "processor_config.json").write_text("{}")
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(ValueError, match=r"could not read|not a FAST processor config"):
        FastTokenizer.load(tmp_path)
    with pytest.raises(ValueError, match="neither a local directory nor downloadable"):
        FastTokenizer.load(tmp_path / "does-not-exist")


# ---------------------------------------------------------------------- the coefficient range


def test_the_fitted_range_is_recorded_and_bounds_encode_and_decode(tmp_path, smooth) -> None:
    from scipy.fft import dct

    tokenizer = FastTokenizer.fit(smooth, vocab_size=512)
    rounded = np.rint(dct(smooth, axis=1, norm="ortho") * tokenizer.scale)
    assert (tokenizer.min_token, tokenizer.max_token) == (rounded.min(), rounded.max())
    tokenizer.save(tmp_path / "tok")
    config = json.loads((tmp_path / "tok" / "processor_config.json").read_text())
    assert config["max_token"] == tokenizer.max_token and config["range_margin"] == 0
    assert FastTokenizer.load(tmp_path / "tok").max_token == tokenizer.max_token
    assert tokenizer.out_of_range(smooth).sum() == 0


def test_decoding_an_out_of_range_code_is_invalid(smooth) -> None:
    tokenizer = FastTokenizer.fit(smooth, vocab_size=512)
    horizon, dim = smooth.shape[1:]
    byte_id = {raw: i for i, raw in enumerate(tokenizer.token_bytes) if raw is not None and len(raw) == 1}
    code_above = tokenizer.max_code + 1  # one above the range: exactly one coefficient too large
    zero = byte_id[b"\x00"]
    ids = [byte_id[bytes([b])] for b in chr(code_above).encode()] + [zero] * (horizon * dim - 1)
    result = tokenizer.decode([ids])
    assert not result.valid[0] and "outside the tokenizer's range" in result.reasons[0]
    widened = FastTokenizer.from_dict({**tokenizer.to_dict(), "range_margin": 1})
    decoded = widened.decode([ids])
    assert decoded.valid[0]  # the margin admits it, and encode accepts what decode returns
    assert widened.codes(decoded.actions).max() == code_above
    with pytest.raises(ValueError, match="outside this tokenizer's range"):
        tokenizer.encode(decoded.actions)


def test_files_without_a_recorded_range_use_the_initial_alphabet(reference_fitted, smooth) -> None:
    from scipy.fft import dct

    directory, reference = reference_fitted
    ours = FastTokenizer.load(directory)  # the published layout: no max_token key
    rounded = np.rint(dct(smooth, axis=1, norm="ortho") * reference.scale)
    assert ours.max_token == rounded.max()  # the reference fitted the same chunks


def test_fuzzed_ids_never_decode_to_an_unencodable_valid_chunk(tokenizer) -> None:
    rng = np.random.default_rng(0)
    horizon, dim = 10, 7
    ids = [rng.integers(0, tokenizer.num_ids, size=rng.integers(1, 120)).tolist() for _ in range(5_000)]
    # sequences of the right length: 70 characters, each a random in-range code or, now and then, any code point
    # (4-byte, private use, just above the range), spelled with single-byte tokens, which can express them all
    byte_id = {raw: i for i, raw in enumerate(tokenizer.token_bytes) if raw is not None and len(raw) == 1}
    far = [tokenizer.max_code + 1, 0xE000, 0x10000, 0x10FFFF, 0x7FF, 0x800]
    chars = []
    for _ in range(5_000):
        codes = rng.integers(0, tokenizer.max_code + 1, size=horizon * dim)
        if rng.random() < 0.5:
            codes[rng.integers(0, len(codes))] = rng.choice(far)
        chars.append(codes)
    ids += [[byte_id[bytes([b])] for b in "".join(map(chr, codes)).encode()] for codes in chars]
    result = tokenizer.decode(ids, time_horizon=horizon, action_dim=dim)
    assert np.isfinite(result.actions).all()
    in_range = np.array([False] * 5_000 + [codes.max() <= tokenizer.max_code for codes in chars])
    assert result.valid.tolist() == in_range.tolist()
    valid = result.actions[result.valid]
    np.testing.assert_array_equal(tokenizer.codes(valid), np.stack(chars)[in_range[5_000:]])  # re-encodes exactly
    bound = max(-tokenizer.min_token, tokenizer.max_token) / tokenizer.scale
    assert np.abs(valid).max() <= bound * np.sqrt(horizon)  # an orthonormal inverse DCT of in-range codes


def test_empty_batches_work_everywhere(tokenizer) -> None:
    from lerobot_fastplus.fast import SplitLayout

    empty = np.zeros((0, 10, 7))
    assert tokenizer.encode(empty) == []
    assert tokenizer.out_of_range(empty).shape == (0,)
    assert tokenizer.codes(empty).shape == (0, 70)
    batch = SplitLayout(tokenizer, 20, 10).build(np.zeros((0, 20, 7)), step_is_pad=np.zeros((0, 20), bool))
    assert batch.ids.shape[0] == batch.valid.shape[0] == batch.lengths.shape[0] == 0


def test_huge_coefficients_raise_clearly_or_clip_in_floating_point(tokenizer, smooth) -> None:
    huge = smooth[:2].copy()
    huge[0, 0, 0] = 1e300
    with pytest.raises(ValueError, match=r"outside this tokenizer's range: scaled values .*e\+30"):
        tokenizer.encode(huge)
    assert tokenizer.out_of_range(huge).tolist()[0] > 0
    codes = tokenizer.codes(huge, clip=True)
    assert codes.min() >= 0 and codes.max() <= tokenizer.max_code
    assert codes[0, 0] == tokenizer.max_code  # clipped to the top, not wrapped around to the bottom
    negative = smooth[:1].copy()
    negative[0, :, 0] = -1e300
    assert tokenizer.codes(negative, clip=True)[0, 0] == 0
    assert tokenizer.decode(tokenizer.encode(huge, clip=True)).valid.all()


@pytest.mark.parametrize(
    "ids",
    [[None], [[1, None, 3]], ["abc"], [[1.0, 2.0]], [[[1, 2], [3]]], [1, 2, 3], None, "abc", 5, [object()]],
    ids=["None row", "None id", "string", "floats", "nested", "flat", "None batch", "string batch", "int", "object"],
)
def test_decode_never_raises_on_malformed_ids(tokenizer, ids) -> None:
    result = tokenizer.decode(ids)
    assert len(result.valid) >= 1 and not result.valid.any()
    assert all(reason for reason in result.reasons)
    assert np.isfinite(result.actions).all() and not result.actions.any()
