"""The exact grammar: the UTF-8 token automaton against a brute-force oracle, and the layout tables, walked with
random legal choices, only ever giving sequences that decode completely inside the tokenizer's range."""

from __future__ import annotations

import codecs
from functools import lru_cache

import numpy as np
import pytest
import torch
from conftest import fit_reference, real_action_chunks, smooth_chunks

from lerobot_fastplus.fast import FastTokenizer, SplitLayout
from lerobot_fastplus.fast.layout_grammar import LayoutGrammar
from lerobot_fastplus.fast.token_automaton import TokenAutomaton, utf8_length
from lerobot_fastplus.policies.common.decoding import ExactGrammar


def fitted(bytes_per_code: int) -> FastTokenizer:
    """Tokenizers whose largest code takes 1, 2 or 3 UTF-8 bytes (a larger scale spreads the codes)."""
    scale, vocab = {1: (10, 400), 2: (60, 1500), 3: (1000, 6000)}[bytes_per_code]
    tokenizer = FastTokenizer.fit(smooth_chunks(300, 10, 3, seed=bytes_per_code), scale=scale, vocab_size=vocab)
    assert utf8_length(tokenizer.max_code) == bytes_per_code
    return tokenizer


@pytest.fixture(scope="module", params=[1, 2, 3], ids=["1-byte", "2-byte", "3-byte"])
def tokenizer(request) -> FastTokenizer:
    return fitted(request.param)


def oracle_legal(pending: bytes, token: bytes, max_code: int) -> tuple[bool, int, bytes]:
    """Brute force: is ``pending + token`` a valid start of UTF-8 text whose complete characters are codes
    <= max_code and whose incomplete last character can still become one? Also the count and the new pending."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    try:
        done = decoder.decode(pending + token, final=False)
    except UnicodeDecodeError:
        return False, 0, b""
    rest = decoder.getstate()[0]
    if any(ord(c) > max_code for c in done) or (rest and smallest_completion(rest) > max_code):
        return False, 0, b""
    return True, len(done), rest


@lru_cache
def smallest_completion(rest: bytes) -> int:
    """Try every continuation of an incomplete character (up to 64 x 64 of them)."""
    length = 2 if rest[0] < 0xE0 else 3 if rest[0] < 0xF0 else 4
    codes = []
    for tail in np.ndindex(*(64,) * (length - len(rest))):
        try:
            codes.append(ord((rest + bytes(0x80 + b for b in tail)).decode("utf-8")))
        except UnicodeDecodeError:
            continue
    return min(codes, default=1 << 30)


def test_automaton_agrees_with_a_brute_force_oracle(tokenizer) -> None:
    automaton = TokenAutomaton.build(tokenizer)
    assert automaton.pending[0] == b""
    for state, pending in enumerate(automaton.pending):
        for token_id, token in enumerate(tokenizer.token_bytes):
            legal = automaton.legal[state, token_id]
            if token is None:
                assert not legal
                continue
            expect, count, rest = oracle_legal(pending, token, tokenizer.max_code)
            assert legal == expect, (pending, token)
            if legal:
                assert automaton.completes[state, token_id] == count
                assert automaton.pending[automaton.next_state[state, token_id]] == rest
    # from every state some legal token completes a character or moves towards one: no dead end
    assert automaton.legal.any(axis=1).all()


def walk(grammar: ExactGrammar, batch: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Random legal choices until every row is done; returns candidate indices and the steps taken."""
    state = grammar.start(batch)
    chosen_steps = []
    for _ in range(grammar.max_length):
        legal = grammar.legal(state).numpy()
        assert legal.any(axis=1).all(), "a row has no legal candidate"
        chosen = np.array([rng.choice(np.flatnonzero(row)) for row in legal])
        chosen_steps.append(chosen)
        state = grammar.advance(state, torch.as_tensor(chosen))
        if grammar.done(state).all():
            break
    assert grammar.done(state).all(), "not finished within the bound"
    return np.stack(chosen_steps, axis=1), len(chosen_steps)


@pytest.mark.parametrize(("chunk_size", "split_every"), [(20, 10), (25, 10), (10, 10)], ids=["split", "ragged", "core"])
def test_random_legal_walks_always_decode_completely(tokenizer, chunk_size, split_every) -> None:
    dim = 3
    layout = SplitLayout(tokenizer, chunk_size, split_every)
    grammar = ExactGrammar(LayoutGrammar.build(layout, dim), "cpu")
    rng = np.random.default_rng(0)
    candidates, steps = walk(grammar, 24, rng)
    assert steps <= grammar.max_length
    local = np.where(candidates < layout.n_fast_ids, candidates, candidates + 1)
    parsed = layout.parse(local, action_dim=dim)
    assert parsed.step_valid.all() and parsed.ended.all(), parsed.reasons
    assert (layout.out_of_range(parsed.actions) == 0).all()  # every value re-encodes inside the range


def test_the_length_bound_is_exact_and_reached_byte_by_byte(tokenizer) -> None:
    """Emitting the largest code one byte token at a time is the longest legal sequence, and it is the bound."""
    dim, layout = 3, SplitLayout(tokenizer, 25, 10)
    tables = LayoutGrammar.build(layout, dim)
    grammar = ExactGrammar(tables, "cpu")
    single = {raw: i for i, raw in enumerate(tokenizer.token_bytes) if raw is not None and len(raw) == 1}
    per_byte = [single[bytes([b])] for b in chr(tokenizer.max_code).encode()]  # the largest code, byte by byte
    split, eos = layout.n_fast_ids, layout.n_fast_ids + 1
    state, steps = grammar.start(1), 0
    while not grammar.done(state).all():
        legal = grammar.legal(state)[0]
        choice = next((t for t in per_byte if legal[t]), split if legal[split] else eos)
        state = grammar.advance(state, torch.tensor([choice]))
        steps += 1
    assert steps == tables.max_length == (25 * dim) * utf8_length(tokenizer.max_code) + layout.n_subchunks


def test_separators_only_close_full_subchunks() -> None:
    tokenizer = fitted(1)
    layout = SplitLayout(tokenizer, 20, 10)
    grammar = ExactGrammar(LayoutGrammar.build(layout, 2), "cpu")
    split, eos = layout.n_fast_ids, layout.n_fast_ids + 1
    zero = next(i for i, raw in enumerate(tokenizer.token_bytes) if raw == b"\x00")  # one coefficient
    state = grammar.start(1)
    for step in range(20):
        legal = grammar.legal(state)[0]
        assert not legal[split] and not legal[eos], step  # sub-chunk 1 holds fewer than 10 x 2 coefficients
        state = grammar.advance(state, torch.tensor([zero]))
    legal = grammar.legal(state)[0]
    assert legal.tolist() == [False] * split + [True, False]  # full: only SPLIT
    state = grammar.advance(state, torch.tensor([split]))
    for _ in range(20):
        state = grammar.advance(state, torch.tensor([zero]))
    assert grammar.legal(state)[0].tolist() == [False] * split + [False, True]  # last sub-chunk full: only EOS
    state = grammar.advance(state, torch.tensor([eos]))
    assert grammar.done(state).all()
    assert grammar.legal(state)[0].tolist() == [False] * split + [False, True]  # done: EOS padding


@pytest.mark.parametrize(
    ("name", "quantiles", "vocab"), [("so101_record_test", "stats", 1024), ("g1_bottle_pick", "stats", 2048)]
)
def test_walks_on_tokenizers_fitted_on_real_data_and_by_the_reference(tmp_path, name, quantiles, vocab) -> None:
    chunks = real_action_chunks(name, 10, stride=5, quantiles=quantiles)
    fit_reference(chunks, vocab, tmp_path)
    for tokenizer in (FastTokenizer.fit(chunks, vocab_size=vocab), FastTokenizer.load(tmp_path)):
        dim = chunks.shape[2]
        layout = SplitLayout(tokenizer, 20, 10)
        grammar = ExactGrammar(LayoutGrammar.build(layout, dim), "cpu")
        candidates, _ = walk(grammar, 6, np.random.default_rng(1))
        local = np.where(candidates < layout.n_fast_ids, candidates, candidates + 1)
        parsed = layout.parse(local, action_dim=dim)
        assert parsed.step_valid.all(), parsed.reasons
        assert (layout.out_of_range(parsed.actions) == 0).all()
