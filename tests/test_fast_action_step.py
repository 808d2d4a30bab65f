"""FAST action-token processor step: ids, masks, persistence in the processor JSON, clear errors."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import torch
from conftest import smooth_chunks
from lerobot.configs import FeatureType, NormalizationMode, PolicyFeature
from lerobot.lerobot_types import TransitionKey
from lerobot.processor import NormalizerProcessorStep, PolicyProcessorPipeline, ProcessorStepRegistry
from lerobot.processor.converters import create_transition

from lerobot_fastplus.fast import FastTokenizer, SplitLayout
from lerobot_fastplus.fast_action_step import (
    ACTION_TOKEN_TARGET_KEY,
    ACTION_TOKEN_VALID_KEY,
    ACTION_TOKENS_KEY,
    REGISTRY_NAME,
    FastActionTokenizerStep,
)

CHUNK, SPLIT, DIM = 30, 10, 4
CONFIG_FILE = "policy_preprocessor.json"
OUTPUT_KEYS = (ACTION_TOKENS_KEY, ACTION_TOKEN_VALID_KEY, ACTION_TOKEN_TARGET_KEY)
LOW = np.array([-2.0, 0.0, 10.0, -0.5])
HIGH = np.array([2.0, 1.0, 30.0, 0.5])


@pytest.fixture(scope="module")
def normalised() -> np.ndarray:
    """Smooth chunks already in [-1, 1]: exactly what the normaliser returns for the raw actions below."""
    chunks = smooth_chunks(240, CHUNK, DIM, seed=1)
    return chunks / np.abs(chunks).max()


@pytest.fixture(scope="module")
def fast(normalised: np.ndarray) -> FastTokenizer:
    """Fitted on every sub-chunk of the test data, so encoding that data never needs clipping."""
    return FastTokenizer.fit(normalised.reshape(-1, SPLIT, DIM), vocab_size=768)


@pytest.fixture
def tokenizer_dir(fast: FastTokenizer, tmp_path):
    return fast.save(tmp_path / "fast_tokenizer")


def raw_batch(normalised: np.ndarray, rows: slice = slice(0, 8)) -> dict[str, torch.Tensor]:
    norm = torch.tensor(normalised[rows], dtype=torch.float32)
    raw = torch.tensor(LOW, dtype=torch.float32) + (norm + 1) / 2 * torch.tensor(HIGH - LOW, dtype=torch.float32)
    is_pad = torch.zeros(norm.shape[:2], dtype=torch.bool)
    is_pad[0, -12:] = True  # last sub-chunk fully padded, the second one partly
    is_pad[1, -10:] = True  # exactly the last sub-chunk
    return {"action": raw, "action_is_pad": is_pad}


def make_pipeline(tokenizer_dir, **step_kwargs) -> PolicyProcessorPipeline:
    normaliser = NormalizerProcessorStep(
        features={"action": PolicyFeature(type=FeatureType.ACTION, shape=(DIM,))},
        norm_map={FeatureType.ACTION: NormalizationMode.MIN_MAX},
        stats={"action": {"min": LOW, "max": HIGH}},
    )
    step = FastActionTokenizerStep(
        tokenizer_path=str(tokenizer_dir), chunk_size=CHUNK, split_every=SPLIT, **step_kwargs
    )
    return PolicyProcessorPipeline(steps=[normaliser, step], name="policy_preprocessor")


def step_transition(actions: torch.Tensor, is_pad: torch.Tensor | None = None) -> dict:
    complementary = {} if is_pad is None else {"action_is_pad": is_pad}
    return create_transition(action=actions, complementary_data=complementary)


def test_ids_match_split_layout_on_normalised_action(tokenizer_dir, normalised, fast) -> None:
    batch = raw_batch(normalised)
    out = make_pipeline(tokenizer_dir)(batch)

    np.testing.assert_allclose(out["action"].numpy(), normalised[:8], atol=1e-5)
    expected = SplitLayout(fast, CHUNK, SPLIT).build(out["action"].numpy(), step_is_pad=batch["action_is_pad"].numpy())
    assert out[ACTION_TOKENS_KEY].dtype == torch.int64
    assert out[ACTION_TOKEN_VALID_KEY].dtype == out[ACTION_TOKEN_TARGET_KEY].dtype == torch.bool
    np.testing.assert_array_equal(out[ACTION_TOKENS_KEY].numpy(), expected.ids)
    np.testing.assert_array_equal(out[ACTION_TOKEN_VALID_KEY].numpy(), expected.valid)
    np.testing.assert_array_equal(out[ACTION_TOKEN_TARGET_KEY].numpy(), expected.target)
    assert torch.equal(out["action_is_pad"], batch["action_is_pad"])  # complementary data passes through


def test_padded_subchunks_are_not_targets(tokenizer_dir, normalised) -> None:
    pipeline = make_pipeline(tokenizer_dir)
    step = pipeline.steps[1]
    out = pipeline(raw_batch(normalised))
    ids, valid, target = (out[key].numpy() for key in OUTPUT_KEYS)
    positions = np.arange(ids.shape[1])
    for row in range(ids.shape[0]):
        assert ids[row, 0] == step.layout.bos_id and not target[row, 0]
        last_split = np.flatnonzero(ids[row] == step.layout.split_id)[-1]
        if row in (0, 1):  # the last sub-chunk (tokens and EOS) is all padding, the rest is still predicted
            np.testing.assert_array_equal(target[row], (positions > 0) & (positions <= last_split))
        else:
            np.testing.assert_array_equal(target[row], valid[row] & (positions > 0))


def test_round_trip_through_processor_json_without_tokenizer_files(
    tokenizer_dir, normalised, fast, tmp_path, monkeypatch
) -> None:
    pipeline = make_pipeline(tokenizer_dir)
    before = pipeline(raw_batch(normalised))
    pipeline.save_pretrained(tmp_path / "checkpoint", config_filename=CONFIG_FILE)
    shutil.rmtree(tokenizer_dir)

    saved = json.loads((tmp_path / "checkpoint" / CONFIG_FILE).read_text())
    (entry,) = [s for s in saved["steps"] if s.get("registry_name") == REGISTRY_NAME]
    assert entry["config"]["tokenizer"] == json.loads(json.dumps(fast.to_dict()))
    assert entry["config"]["chunk_size"] == CHUNK and entry["config"]["split_every"] == SPLIT
    assert not list((tmp_path / "checkpoint").glob("tokenizer*.json"))

    def no_loading(*args, **kwargs):
        raise AssertionError("the step must rebuild from the embedded tokenizer")

    monkeypatch.setattr(FastTokenizer, "load", no_loading)
    reloaded = PolicyProcessorPipeline.from_pretrained(tmp_path / "checkpoint", config_filename=CONFIG_FILE)
    after = reloaded(raw_batch(normalised))
    for key in OUTPUT_KEYS:
        assert torch.equal(before[key], after[key]), key
    assert reloaded.steps[1].layout.eos_id == pipeline.steps[1].layout.eos_id


def test_registry_name_resolves() -> None:
    assert ProcessorStepRegistry.get(REGISTRY_NAME) is FastActionTokenizerStep


def test_embedded_tokenizer_wins_over_path(fast) -> None:
    step = FastActionTokenizerStep(tokenizer_path="/nowhere/fast", tokenizer=fast.to_dict(), chunk_size=CHUNK)
    assert step.fast_tokenizer.num_ids == fast.num_ids
    assert step.get_config()["tokenizer_path"] == "/nowhere/fast"  # kept as provenance only
    json.dumps(step.get_config())


def test_inference_without_action_is_unchanged(tokenizer_dir) -> None:
    pipeline = make_pipeline(tokenizer_dir)
    transition = create_transition(observation={"observation.state": torch.zeros(1, DIM)})
    assert pipeline.steps[1](transition) is transition
    out = pipeline({"observation.state": torch.zeros(1, DIM)})
    assert not set(OUTPUT_KEYS) & set(out)


def test_single_chunk_and_bfloat16(fast, normalised) -> None:
    step = FastActionTokenizerStep(tokenizer=fast.to_dict(), chunk_size=CHUNK, split_every=SPLIT)
    action = torch.tensor(normalised[3], dtype=torch.float32)
    single = step(step_transition(action))[TransitionKey.COMPLEMENTARY_DATA]
    batched = step(step_transition(action[None]))[TransitionKey.COMPLEMENTARY_DATA]
    for key in OUTPUT_KEYS:
        assert single[key].shape == batched[key].shape[1:]
        assert torch.equal(single[key], batched[key][0])

    bf16 = torch.tensor(normalised[:4]).to(torch.bfloat16)
    out = step(step_transition(bf16))[TransitionKey.COMPLEMENTARY_DATA]
    expected = step.layout.build(bf16.float().numpy(), clip=True)
    np.testing.assert_array_equal(out[ACTION_TOKENS_KEY].numpy(), expected.ids)
    assert out[ACTION_TOKENS_KEY].device == bf16.device


def test_clipping_warns_with_counts_and_is_rate_limited(fast, normalised, caplog) -> None:
    step = FastActionTokenizerStep(tokenizer=fast.to_dict(), chunk_size=CHUNK, split_every=SPLIT)
    wild = torch.tensor(normalised[:4] * 4, dtype=torch.float32)
    with caplog.at_level(logging.WARNING, logger="lerobot_fastplus.fast_action_step"):
        first = step(step_transition(wild))[TransitionKey.COMPLEMENTARY_DATA]
        step(step_transition(wild))
    warnings = [r.getMessage() for r in caplog.records if "clipped" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "action chunks of this batch" in warnings[0] and "refit" in warnings[0]
    assert step._clipped_coefficients > 0 and step._clipped_chunks == 8
    expected = step.layout.build(wild.numpy(), clip=True)
    np.testing.assert_array_equal(first[ACTION_TOKENS_KEY].numpy(), expected.ids)

    strict = FastActionTokenizerStep(tokenizer=fast.to_dict(), chunk_size=CHUNK, split_every=SPLIT, clip=False)
    with pytest.raises(ValueError, match="outside this tokenizer's range"):
        strict(step_transition(wild))


def test_error_without_tokenizer_source() -> None:
    with pytest.raises(ValueError, match="set tokenizer_path"):
        FastActionTokenizerStep(chunk_size=CHUNK)


def test_error_for_missing_tokenizer_path(tmp_path) -> None:
    with pytest.raises(ValueError, match="neither a local directory nor downloadable"):
        FastActionTokenizerStep(tokenizer_path=str(tmp_path / "missing" / "tokenizer"), chunk_size=CHUNK)


def test_error_for_split_larger_than_chunk(fast) -> None:
    with pytest.raises(ValueError, match="split_every"):
        FastActionTokenizerStep(tokenizer=fast.to_dict(), chunk_size=5, split_every=SPLIT)


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((2, 20, DIM), "has 20 steps but chunk_size=30"),
        ((2, CHUNK, DIM + 1), f"has {DIM + 1} dimensions but the FAST tokenizer was fitted on {DIM}"),
        ((2, 3, CHUNK, DIM), "expects the action as a tensor"),
    ],
)
def test_error_for_wrong_action_shape(fast, shape, message) -> None:
    step = FastActionTokenizerStep(tokenizer=fast.to_dict(), chunk_size=CHUNK, split_every=SPLIT)
    with pytest.raises(ValueError, match=message):
        step(step_transition(torch.zeros(shape)))


def test_error_for_wrong_pad_shape(fast, normalised) -> None:
    action = torch.tensor(normalised[:2], dtype=torch.float32)
    step = FastActionTokenizerStep(tokenizer=fast.to_dict(), chunk_size=CHUNK, split_every=SPLIT, max_tokens=4)
    with pytest.raises(ValueError, match="action_is_pad has shape"):
        step(step_transition(action, torch.zeros(2, CHUNK - 1, dtype=torch.bool)))


def test_sub_chunks_beyond_max_tokens_leave_the_targets_with_a_warning(fast, normalised, caplog) -> None:
    """A long chunk never stops training: the sub-chunks that fit stay, the rest are dropped, counted, reported."""
    action = torch.tensor(normalised[:3], dtype=torch.float32)
    full = FastActionTokenizerStep(tokenizer=fast.to_dict(), chunk_size=CHUNK, split_every=SPLIT)
    reference = full(step_transition(action))[TransitionKey.COMPLEMENTARY_DATA]
    lengths = reference[ACTION_TOKEN_VALID_KEY].sum(dim=1)
    first = full.layout.encode_subchunks(normalised[:3])
    budget = int(lengths.min()) - 1  # every chunk is one token too long for all its sub-chunks
    step = FastActionTokenizerStep(tokenizer=fast.to_dict(), chunk_size=CHUNK, split_every=SPLIT, max_tokens=budget)
    with caplog.at_level(logging.WARNING):
        out = step(step_transition(action))[TransitionKey.COMPLEMENTARY_DATA]
    assert "3 action chunk(s) of this batch need more than" in caplog.text
    ids, valid, target = out[ACTION_TOKENS_KEY], out[ACTION_TOKEN_VALID_KEY], out[ACTION_TOKEN_TARGET_KEY]
    assert int(valid.sum(dim=1).max()) <= budget
    dropped = 0
    for row in range(3):
        kept, n_kept = 1, 0  # BOS, then whole sub-chunks (tokens and separator) while they fit
        while n_kept < len(first[row]) and kept + len(first[row][n_kept]) + 1 <= budget:
            kept, n_kept = kept + len(first[row][n_kept]) + 1, n_kept + 1
        dropped += len(first[row]) - n_kept
        assert int(valid[row].sum()) == kept and int(target[row].sum()) == kept - 1
        assert torch.equal(ids[row, :kept], reference[ACTION_TOKENS_KEY][row, :kept])
    assert step._dropped_subchunks == dropped >= 3
