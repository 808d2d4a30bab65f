"""FAST tokenizer: the batched decode paths (integer arrays, tensors, one buffer for the whole batch) and the range
check give the same ids, flags and reasons as decoding each sequence on its own from a list."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import smooth_chunks
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lerobot_fastplus.fast import FastTokenizer
from lerobot_fastplus.fast.tokenizer import DecodeResult


def assert_same(result: DecodeResult, expected: DecodeResult) -> None:
    assert result.reasons == expected.reasons
    np.testing.assert_array_equal(result.valid, expected.valid)
    np.testing.assert_array_equal(result.actions, expected.actions)
    assert result.actions.dtype == np.float64 and result.valid.dtype == bool


def one_by_one(tokenizer: FastTokenizer, rows: list[list[int]]) -> DecodeResult:
    """Each row decoded alone: what a batch must reproduce row for row."""
    results = [tokenizer.decode([row]) for row in rows]
    return DecodeResult(
        np.concatenate([r.actions for r in results]),
        np.concatenate([r.valid for r in results]),
        [r.reasons[0] for r in results],
    )


def byte_token(tokenizer: FastTokenizer, value: int) -> int:
    return next(i for i, raw in enumerate(tokenizer.token_bytes) if raw == bytes([value]))


def equal_length_rows(tokenizer: FastTokenizer, chunks: np.ndarray) -> list[list[int]]:
    """Encoded chunks cut to one length (the shortest): some stay valid, the cut ones decode as too short."""
    ids = tokenizer.encode(chunks)
    length = min(len(row) for row in ids)
    return [row[:length] for row in ids]


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.int16, np.uint16, np.uint64])
def test_integer_arrays_decode_like_lists(tokenizer, smooth, dtype) -> None:
    rows = equal_length_rows(tokenizer, smooth[:200])
    expected = tokenizer.decode(rows)
    assert expected.valid.any() and not expected.valid.all()
    assert_same(tokenizer.decode(np.array(rows, dtype=dtype)), expected)
    assert_same(tokenizer.decode([np.array(row, dtype=dtype) for row in rows]), expected)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.int16])
def test_tensors_decode_like_lists(tokenizer, smooth, dtype) -> None:
    rows = equal_length_rows(tokenizer, smooth[:200])
    expected = tokenizer.decode(rows)
    assert_same(tokenizer.decode(torch.tensor(rows, dtype=dtype)), expected)
    assert_same(tokenizer.decode([torch.tensor(row, dtype=dtype) for row in rows]), expected)


def test_other_row_containers_decode_like_lists(tokenizer, smooth) -> None:
    rows = tokenizer.encode(smooth[:50])
    expected = tokenizer.decode(rows)
    assert expected.valid.all()
    assert_same(tokenizer.decode([tuple(row) for row in rows]), expected)
    assert_same(tokenizer.decode([[np.int64(t) for t in row] for row in rows]), expected)
    assert_same(tokenizer.decode(tuple(rows)), expected)


def test_malformed_ids_in_an_integer_array(tokenizer, smooth) -> None:
    rows = equal_length_rows(tokenizer, smooth[:4])
    lead, continuation = byte_token(tokenizer, 0xC3), byte_token(tokenizer, 0xA9)
    rows[0][1] = -1
    rows[1][-1] = tokenizer.num_ids
    rows[2][0] = continuation
    rows[3][-1] = lead
    matrix = np.array(rows, dtype=np.int64)
    original = matrix.copy()
    result = tokenizer.decode(matrix)
    np.testing.assert_array_equal(matrix, original)  # the caller's array is left alone
    assert not result.valid.any() and not result.actions.any()
    assert "out of range" in result.reasons[0] and "out of range" in result.reasons[1]
    assert "multi-byte" in result.reasons[2] and "multi-byte" in result.reasons[3]
    assert_same(result, tokenizer.decode(rows))
    assert_same(tokenizer.decode(torch.tensor(rows)), tokenizer.decode(rows))

    huge = np.array([[2**64 - 1, 2**63, 1]], dtype=np.uint64)
    assert tokenizer.decode(huge).reasons == [f"token id out of range [0, {tokenizer.num_ids})"]


def test_arrays_that_are_no_integer_matrix_keep_their_reasons(tokenizer, smooth) -> None:
    rows = equal_length_rows(tokenizer, smooth[:3])
    for batch in (
        np.array(rows, dtype=np.float64),
        np.array(rows, dtype=bool),
        torch.tensor(rows, dtype=torch.float32),
    ):
        result = tokenizer.decode(batch)
        assert not result.valid.any()
        assert all(reason.startswith("token ids must be integers") for reason in result.reasons)
    for batch in (np.array([rows]), torch.tensor([rows])):
        result = tokenizer.decode(batch)
        assert len(result.reasons) == 1 and not result.valid.any() and result.reasons[0]
    masked = np.ma.masked_array(rows, mask=np.zeros((3, len(rows[0])), dtype=bool))
    masked[1, 0] = np.ma.masked  # a masked id is no id: the row reads as holding None
    result = tokenizer.decode(masked)
    assert result.reasons[1] == "token ids must be integers, got NoneType None"
    assert_same(tokenizer.decode(masked[[0, 2]]), tokenizer.decode([rows[0], rows[2]]))


def test_a_character_split_between_rows_invalidates_both(tokenizer, smooth) -> None:
    """Joined, the two rows are valid UTF-8; each on its own is not."""
    good = tokenizer.encode(smooth[:3])
    lead, continuation = byte_token(tokenizer, 0xC3), byte_token(tokenizer, 0xA9)
    rows = [good[0], [*good[1], lead], [continuation, *good[2]], good[0]]
    result = tokenizer.decode(rows)
    assert result.valid.tolist() == [True, False, False, True]
    assert "multi-byte" in result.reasons[1] and "multi-byte" in result.reasons[2]
    assert_same(result, one_by_one(tokenizer, rows))


def test_ids_beyond_int64_are_out_of_range(tokenizer, smooth) -> None:
    good = tokenizer.encode(smooth[:1])[0]
    rows = [[*good, 2**70], [-(2**70), *good], good]
    result = tokenizer.decode(rows)
    assert result.valid.tolist() == [False, False, True]
    assert result.reasons[:2] == [f"token id out of range [0, {tokenizer.num_ids})"] * 2


def test_one_malformed_row_leaves_the_others_alone(tokenizer, smooth) -> None:
    good = tokenizer.encode(smooth[:5])
    for bad in ([1.0, 2.0], [True, 3], [None], "abc", [1, [2]]):
        rows = [*good[:2], bad, *good[2:]]
        result = tokenizer.decode(rows)
        assert result.valid.tolist() == [True, True, False, True, True, True]
        assert result.reasons[2] == tokenizer.decode([bad]).reasons[0]
        np.testing.assert_array_equal(result.actions[[0, 1, 3, 4, 5]], tokenizer.decode(good).actions)


def sequences(tokenizer: FastTokenizer, chunks: np.ndarray):
    """Sequences near valid ones: encoded chunks, cut, joined, with ids replaced or appended, and random ids."""
    encoded = tokenizer.encode(chunks)
    row = st.sampled_from(encoded)
    token = st.integers(-2, tokenizer.num_ids + 1)
    edited = st.tuples(row, st.integers(0, 80), token).map(lambda x: [*x[0][: x[1]], x[2], *x[0][x[1] + 1 :]])
    return st.one_of(
        row,
        st.tuples(row, st.integers(0, 80)).map(lambda x: x[0][: x[1]]),
        st.tuples(row, row).map(lambda x: x[0] + x[1]),
        edited,
        st.tuples(row, token).map(lambda x: [*x[0], x[1]]),
        st.lists(token, max_size=40),
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_batch_decodes_each_row_as_if_alone(tokenizer, smooth, data) -> None:
    rows = data.draw(st.lists(sequences(tokenizer, smooth[:30]), max_size=8))
    result = tokenizer.decode(rows)
    assert_same(result, one_by_one(tokenizer, rows) if rows else tokenizer.decode([]))


@pytest.mark.parametrize("offset", [-0.5, 0.5])
def test_range_check_rounds_half_to_even_at_both_ends(offset) -> None:
    """Coefficients exactly half-way past an end of the range are inside when they round to even onto it."""
    chunks = smooth_chunks(50, 10, 3, seed=0)
    tokenizer = FastTokenizer.fit(chunks, scale=2.0, vocab_size=300, transform="none")  # coefficients = 2 * actions
    end = tokenizer.min_token if offset < 0 else tokenizer.max_token
    actions = np.zeros((1, 10, 3))
    actions[0, 0, 0] = (end + offset) / 2.0
    rounded = np.rint(end + offset)
    inside = tokenizer.min_token <= rounded <= tokenizer.max_token
    assert tokenizer.out_of_range(actions).tolist() == [0 if inside else 1]
    if inside:
        assert tokenizer.codes(actions)[0, 0] == rounded - tokenizer.min_token
    else:
        with pytest.raises(ValueError, match="outside this tokenizer's range"):
            tokenizer.codes(actions)
    assert tokenizer.codes(actions, clip=True)[0, 0] == end - tokenizer.min_token
