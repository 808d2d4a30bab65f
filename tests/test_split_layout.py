"""BOS / SPLIT / EOS layout: building targets, parsing generated ids, recovering partial output."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import real_action_chunks, smooth_chunks
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lerobot_fastplus.fast import FastTokenizer, SplitLayout


@pytest.fixture(scope="module")
def tokenizer(chunks) -> FastTokenizer:
    """Fitted on 10-step windows that include the test chunks' sub-chunks, as a dataset's tokenizer is."""
    windows = np.concatenate([smooth_chunks(400, 10, 4, seed=7), chunks.reshape(-1, 10, 4)])
    return FastTokenizer.fit(windows, vocab_size=512)


@pytest.fixture(scope="module")
def layout(tokenizer) -> SplitLayout:
    return SplitLayout(tokenizer, chunk_size=50, split_every=10)


@pytest.fixture(scope="module")
def chunks() -> np.ndarray:
    return smooth_chunks(16, 50, 4, seed=8)


def test_sequence_structure(layout, tokenizer, chunks):
    batch = layout.build(chunks)
    sub_ids = layout.encode_subchunks(chunks)
    for b, (row, length) in enumerate(zip(batch.ids, batch.lengths, strict=True)):
        expected = [layout.bos_id]
        for j, tokens in enumerate(sub_ids[b]):
            assert tokens == tokenizer.encode(chunks[b, 10 * j : 10 * (j + 1)])[0]
            expected += [*tokens, layout.split_id if j < 4 else layout.eos_id]
        assert row[:length].tolist() == expected
        assert (row[length:] == layout.eos_id).all()
        assert batch.valid[b].tolist() == [True] * length + [False] * (batch.ids.shape[1] - length)
        assert batch.target[b].tolist() == [False] + [True] * (length - 1) + [False] * (batch.ids.shape[1] - length)
    assert (layout.bos_id, layout.split_id, layout.eos_id) == tuple(tokenizer.num_ids + k for k in range(3))
    assert batch.ids.max() < layout.num_ids


def test_roundtrip_recovers_every_subchunk(layout, chunks):
    parsed = layout.parse(layout.build(chunks).ids)
    assert parsed.step_valid.all() and parsed.ended.all() and parsed.n_failed == 0
    direct = np.concatenate(
        [layout.tokenizer.decode(layout.tokenizer.encode(chunks[:, s:e])).actions for s, e in layout.bounds], axis=1
    )
    np.testing.assert_allclose(parsed.actions, direct, atol=1e-12)
    assert np.abs(parsed.actions - chunks).max() < 0.2


def test_parse_without_bos_and_with_ragged_lists(layout, chunks):
    batch = layout.build(chunks[:3])
    ragged = [row[1:length].tolist() for row, length in zip(batch.ids, batch.lengths, strict=True)]
    np.testing.assert_array_equal(layout.parse(ragged).actions, layout.parse(batch.ids).actions)


def test_cut_short_sequence_keeps_complete_subchunks(layout, chunks):
    full = layout.build(chunks[:1])
    seq = full.ids[0, : full.lengths[0]].tolist()
    splits = [i for i, t in enumerate(seq) if t == layout.split_id]
    cut = seq[: splits[1] + 3]  # two complete sub-chunks, then three tokens of the third
    parsed = layout.parse([cut])
    assert parsed.subchunk_valid[0].tolist() == [True, True, False, False, False]
    assert parsed.step_valid[0, :20].all() and not parsed.step_valid[0, 20:].any()
    assert not parsed.ended[0] and parsed.missing_steps[0] == 30
    reference = layout.parse(full.ids[:1]).actions[0]
    np.testing.assert_allclose(parsed.actions[0, :20], reference[:20])
    # missing steps hold the last recovered step: finite, and not an all-zero "action"
    np.testing.assert_allclose(parsed.actions[0, 20:], np.repeat(reference[19:20], 30, axis=0))
    assert any("cut short" in r for r in parsed.reasons[0])


def test_bad_middle_subchunk_spoils_only_itself(layout, chunks):
    seq = layout.build(chunks[:1]).ids[0].tolist()
    splits = [i for i, t in enumerate(seq) if t == layout.split_id]
    seq[splits[1] + 1] = layout.tokenizer.num_ids + 50  # garbage id inside sub-chunk 3
    parsed = layout.parse([seq])
    assert parsed.subchunk_valid[0].tolist() == [True, True, False, True, True]
    assert parsed.ended[0]
    full = layout.parse(layout.build(chunks[:1]).ids).actions[0]
    np.testing.assert_allclose(parsed.actions[0, 30:], full[30:])
    np.testing.assert_allclose(parsed.actions[0, 20:30], np.repeat(full[19:20], 10, axis=0))
    assert any("sub-chunk 3" in r for r in parsed.reasons[0])


def test_nothing_recovered_gives_zeros_and_flags(layout):
    parsed = layout.parse([[layout.bos_id, layout.eos_id], [], [layout.split_id] * 7], action_dim=4)
    assert parsed.actions.shape == (3, 50, 4) and not parsed.actions.any()
    assert not parsed.step_valid.any() and parsed.n_failed == 3


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(st.integers(-3, 520), max_size=80), min_size=1, max_size=4))
def test_parse_property_random_ids(layout, ids):
    parsed = layout.parse(ids, action_dim=4)
    assert parsed.actions.shape == (len(ids), 50, 4) and np.isfinite(parsed.actions).all()
    assert parsed.step_valid.shape == (len(ids), 50)
    for b in range(len(ids)):
        assert (parsed.step_valid[b] == np.repeat(parsed.subchunk_valid[b], 10)).all()
        assert parsed.step_valid[b].all() or parsed.reasons[b]


def test_ragged_last_subchunk(tokenizer):
    layout = SplitLayout(tokenizer, chunk_size=25, split_every=10)
    assert layout.bounds == [(0, 10), (10, 20), (20, 25)]
    data = smooth_chunks(8, 25, 4, seed=9)
    parsed = layout.parse(layout.build(data).ids)
    assert parsed.step_valid.all()
    assert np.abs(parsed.actions - data).max() < 0.2


def test_padded_subchunks_are_not_targets(layout, chunks):
    step_is_pad = np.zeros((2, 50), dtype=bool)
    step_is_pad[0, 35:] = True  # sub-chunk 4 partly padded, sub-chunk 5 fully padded
    batch = layout.build(chunks[:2], step_is_pad=step_is_pad)
    plain = layout.build(chunks[:2])
    np.testing.assert_array_equal(batch.ids, plain.ids)
    np.testing.assert_array_equal(batch.target[1], plain.target[1])
    seq = batch.ids[0, : batch.lengths[0]].tolist()
    last_split = max(i for i, t in enumerate(seq) if t == layout.split_id)
    assert batch.target[0, 1 : last_split + 1].all()
    assert not batch.target[0, last_split + 1 :].any()


def test_max_length_drops_the_trailing_sub_chunks_that_do_not_fit(layout):
    chunks = smooth_chunks(3, 50, 4, seed=7)
    full = layout.build(chunks, clip=True)
    budget = int(full.lengths.min()) - 1
    cut = layout.build(chunks, clip=True, max_length=budget)
    assert (cut.lengths <= budget).all() and (cut.dropped >= 1).all() and not full.dropped.any()
    for row in range(3):
        n = cut.lengths[row]
        assert (cut.ids[row, :n] == full.ids[row, :n]).all() and cut.ids[row, n - 1] == layout.split_id
        kept = layout.parse([cut.ids[row, :n]], action_dim=4).subchunk_valid[0]
        assert kept.sum() == layout.n_subchunks - cut.dropped[row]  # what is kept still decodes
    assert layout.lengths(chunks, clip=True).tolist() == full.lengths.tolist()
    nothing = layout.build(chunks, clip=True, max_length=2)  # not even one sub-chunk fits: BOS alone, no targets
    assert (nothing.lengths == 1).all() and not nothing.target.any() and (nothing.dropped == layout.n_subchunks).all()


def test_config_and_input_errors(tokenizer, layout):
    with pytest.raises(ValueError, match="split_every"):
        SplitLayout(tokenizer, chunk_size=5, split_every=10)
    with pytest.raises(ValueError, match="positive"):
        SplitLayout(tokenizer, chunk_size=0)
    with pytest.raises(ValueError, match="chunk_size=50"):
        layout.build(smooth_chunks(2, 40, 4))
    with pytest.raises(ValueError, match="action_dim"):
        SplitLayout(FastTokenizer(tokenizer.bpe, min_token=tokenizer.min_token), 50).parse([[1, 2]])


@pytest.mark.parametrize(("name", "quantiles"), [("so101_record_test", "stats"), ("g1_bottle_pick", "frames")])
def test_split_layout_keeps_10_step_accuracy_on_real_50_step_chunks(name, quantiles):
    """A 50-step chunk through the split layout reconstructs as well as 10-step chunks do; the same
    50 steps encoded as one FAST chunk with that 10-step tokenizer do not (the low-frequency
    coefficients of a longer window leave the fitted range, so they must be clipped)."""
    short = real_action_chunks(name, 10, stride=1, quantiles=quantiles)
    long = real_action_chunks(name, 50, stride=5, quantiles=quantiles)
    tokenizer = FastTokenizer.fit(short, vocab_size=1024)
    mse_10 = ((tokenizer.decode(tokenizer.encode(short)).actions - short) ** 2).mean()

    layout = SplitLayout(tokenizer, chunk_size=50, split_every=10)
    parsed = layout.parse(layout.build(long).ids)
    assert parsed.step_valid.all()
    mse_split = ((parsed.actions - long) ** 2).mean()

    with pytest.raises(ValueError, match="outside this tokenizer's range"):
        tokenizer.encode(long)
    whole = tokenizer.decode(tokenizer.encode(long, clip=True), time_horizon=50)
    mse_whole = ((whole.actions - long) ** 2).mean()

    print(f"{name}: per-element MSE 10-step {mse_10:.3g}, split 50-step {mse_split:.3g}, whole 50-step {mse_whole:.3g}")
    assert 0.8 < mse_split / mse_10 < 1.25
    assert mse_whole > 20 * mse_10
