"""FAST tokenizers both ways between this package and core LeRobot.

Our directories load where core loads FAST tokenizers (``AutoProcessor.from_pretrained(dir, trust_remote_code=True)``:
``ActionTokenizerProcessorStep``, core pi0_fast) and give our ids and actions there; a tokenizer written by
``lerobot-train-tokenizer`` (the committed fixture, see ``fixtures/make_lerobot_train_tokenizer_fixture.py``) loads with
``FastTokenizer.load`` and gives the ids its own processor gives.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import real_action_chunks, smooth_chunks

from lerobot_fastplus.fast import FastTokenizer
from lerobot_fastplus.fast.tokenizer import AUTO_PROCESSOR

TRAIN_TOKENIZER_FIXTURE = Path(__file__).resolve().parent / "fixtures" / "lerobot_train_tokenizer_so101"


def auto_processor(directory: Path):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(str(directory), trust_remote_code=True)


@pytest.fixture(scope="module")
def smooth() -> np.ndarray:
    return smooth_chunks(300, 10, 6, seed=4)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, smooth) -> tuple[FastTokenizer, Path]:
    tokenizer = FastTokenizer.fit(smooth, vocab_size=512)
    return tokenizer, tokenizer.save(tmp_path_factory.mktemp("interop") / "tok")


@pytest.fixture(scope="module")
def text_tokenizer(tmp_path_factory) -> Path:
    """A local tokenizer with PaliGemma's id layout: core's step maps FAST ids into it."""
    from lerobot_fastplus.policies.common.text_tokenizer import write_paligemma_layout_tokenizer

    return write_paligemma_layout_tokenizer(tmp_path_factory.mktemp("text"))


def fast_ids_from_core_step(step, tokens: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
    """Undo core's framing ``BOS, "Action: ", vocab - 1 - skip - fast ids, "|"`` of each padded row."""
    text = step._paligemma_tokenizer
    prefix = [text.bos_token_id, *text.encode("Action: ", add_special_tokens=False)]
    suffix = text.encode("|")
    offset = text.vocab_size - 1 - step.fast_skip_tokens
    rows = []
    for row, valid in zip(tokens.tolist(), mask.tolist(), strict=True):
        row = row[: sum(valid)]
        assert row[: len(prefix)] == prefix and row[len(row) - len(suffix) :] == suffix
        rows.append([offset - t for t in row[len(prefix) : len(row) - len(suffix)]])
    return rows


@pytest.mark.parametrize(
    ("name", "stride", "quantiles"), [("so101_record_test", 1, "stats"), ("g1_bottle_pick", 8, "frames")]
)
def test_core_action_tokenizer_step_gives_our_ids_on_real_chunks(tmp_path, text_tokenizer, name, stride, quantiles):
    from lerobot.processor import ActionTokenizerProcessorStep, TransitionKey, create_transition
    from lerobot.utils.constants import ACTION_TOKEN_MASK, ACTION_TOKENS

    chunks = torch.from_numpy(real_action_chunks(name, 10, stride=stride, quantiles=quantiles)).float()
    ours = FastTokenizer.fit(chunks.numpy(), vocab_size=1024)
    step = ActionTokenizerProcessorStep(
        action_tokenizer_name=str(ours.save(tmp_path / "fast")),
        paligemma_tokenizer_name=str(text_tokenizer),
    )
    assert type(step.action_tokenizer).__name__ == AUTO_PROCESSOR.split(".")[1]  # not a plain text tokenizer
    out = step(create_transition(action=chunks))[TransitionKey.COMPLEMENTARY_DATA]
    core_ids = fast_ids_from_core_step(step, out[ACTION_TOKENS], out[ACTION_TOKEN_MASK])
    expected = ours.encode(chunks.numpy())
    matched = sum(a == b for a, b in zip(core_ids, expected, strict=True))
    assert matched == len(chunks) > 300, f"{matched}/{len(chunks)} chunks got our ids"


def test_autoprocessor_round_trip_gives_our_ids_and_decode(saved, smooth) -> None:
    ours, directory = saved
    processor = auto_processor(directory)
    ids = ours.encode(smooth)
    assert processor(smooth) == ids
    assert processor(torch.from_numpy(smooth[0])) == ids[:1]  # one [T, D] chunk, as a tensor
    np.testing.assert_array_equal(processor.decode(ids), ours.decode(ids).actions)
    # what core pi0_fast reads to decode by itself
    assert (processor.scale, processor.min_token, processor.vocab_size) == (ours.scale, ours.min_token, 512)
    assert (processor.time_horizon, processor.action_dim) == (10, 6)
    coefficients = np.array([ord(c) for c in processor.bpe_tokenizer.decode(ids[0])]) + processor.min_token
    np.testing.assert_array_equal(coefficients, ours.codes(smooth[:1])[0] + ours.min_token)


def test_autoprocessor_decodes_bad_sequences_to_zeros_like_ours(saved, smooth, caplog) -> None:
    ours, directory = saved
    processor = auto_processor(directory)
    good = ours.encode(smooth[:2])
    byte_id = {raw: i for i, raw in enumerate(ours.token_bytes) if raw is not None and len(raw) == 1}
    split_character = [byte_id[chr(300).encode()[:1]]] + good[0]  # a lead byte with no continuation byte
    above_range = [byte_id[bytes([b])] for b in chr(ours.max_code + 1).encode()] + [byte_id[b"\x00"]] * 59
    bad = [good[0][:-1], split_character, above_range, [ours.num_ids], [], [0.5] * 3]
    batch = [good[0], *bad, good[1]]
    with caplog.at_level(logging.WARNING):
        actions = processor.decode(batch, time_horizon=10, action_dim=6)
    result = ours.decode(batch, time_horizon=10, action_dim=6)
    assert result.valid.tolist() == [True] + [False] * len(bad) + [True]
    np.testing.assert_array_equal(actions, result.actions)
    assert f"zeros for {len(bad)} of {len(batch)}" in caplog.text


def test_autoprocessor_clips_out_of_range_chunks_like_encode_clip(saved, smooth, caplog) -> None:
    ours, directory = saved
    processor = auto_processor(directory)
    loud = 3 * smooth[:20]
    assert ours.out_of_range(loud).sum() > 0
    with caplog.at_level(logging.WARNING):
        assert processor(loud) == ours.encode(loud, clip=True)
    assert "clipped" in caplog.text
    with pytest.raises(ValueError, match="outside this tokenizer's range"):
        processor(loud, clip=False)
    with pytest.raises(ValueError, match="NaN"):
        processor(np.full((10, 6), np.nan))


def test_saved_layout_is_the_published_one_plus_auto_map(saved) -> None:
    ours, directory = saved
    module = AUTO_PROCESSOR.split(".")[0]
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        ["processor_config.json", "tokenizer.json", "tokenizer_config.json", f"{module}.py"]
    )
    config = json.loads((directory / "processor_config.json").read_text())
    assert config["auto_map"] == {"AutoProcessor": AUTO_PROCESSOR}
    assert {k: config[k] for k in ("scale", "vocab_size", "min_token", "max_token", "range_margin")} == {
        "scale": ours.scale,
        "vocab_size": 512,
        "min_token": ours.min_token,
        "max_token": ours.max_token,
        "range_margin": 0,
    }
    package_copy = Path(sys.modules["lerobot_fastplus.fast"].__file__).with_name(f"{module}.py")
    assert (directory / f"{module}.py").read_text() == package_copy.read_text()


def test_processor_save_pretrained_round_trips(saved, smooth, tmp_path) -> None:
    """What lerobot-train-tokenizer's consumers do with a loaded processor (save_pretrained / push_to_hub)."""
    ours, directory = saved
    auto_processor(directory).save_pretrained(tmp_path / "again")
    ids = ours.encode(smooth)
    assert FastTokenizer.load(tmp_path / "again").encode(smooth) == ids
    assert auto_processor(tmp_path / "again")(smooth) == ids


BLOCKED_IMPORT = """
import importlib.abc, json, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("lerobot_fastplus", "lerobot_policy_fastplus"):
            raise ImportError(f"{name} is blocked: the directory must load with core LeRobot only")
sys.meta_path.insert(0, Block())
import numpy as np
from transformers import AutoProcessor
processor = AutoProcessor.from_pretrained(sys.argv[1], trust_remote_code=True)
print(json.dumps(processor(np.load(sys.argv[2]))))
"""


def test_saved_directory_loads_without_this_package(saved, smooth, tmp_path) -> None:
    ours, directory = saved
    np.save(tmp_path / "chunks.npy", smooth[:50])
    run = subprocess.run(
        [sys.executable, "-c", BLOCKED_IMPORT, str(directory), str(tmp_path / "chunks.npy")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout.splitlines()[-1]) == ours.encode(smooth[:50])


def test_lerobot_train_tokenizer_output_gives_identical_ids() -> None:
    """The fixture was written by lerobot-train-tokenizer on every 10-step chunk of so101_record_test."""
    theirs = auto_processor(TRAIN_TOKENIZER_FIXTURE)  # how core's consumers load it
    assert type(theirs).__name__ == "UniversalActionProcessor"
    ours = FastTokenizer.load(TRAIN_TOKENIZER_FIXTURE)
    metadata = json.loads((TRAIN_TOKENIZER_FIXTURE / "metadata.json").read_text())
    # the tool clips to [q01, q99] before mapping to [-1, 1]
    chunks = np.clip(real_action_chunks("so101_record_test", metadata["action_horizon"]), -1, 1)
    assert len(chunks) == metadata["num_training_chunks"] == 1456
    assert (ours.scale, ours.min_token, ours.vocab_size) == (theirs.scale, theirs.min_token, theirs.vocab_size)
    ids = ours.encode(chunks)
    their_ids = [list(x) for x in theirs(chunks)]
    matched = sum(a == b for a, b in zip(ids, their_ids, strict=True))
    assert matched == len(chunks), f"{matched}/{len(chunks)} chunks got identical ids"
    decoded = ours.decode(ids, time_horizon=10, action_dim=6)
    assert decoded.valid.all()
    np.testing.assert_allclose(decoded.actions, theirs.decode(ids, time_horizon=10, action_dim=6), atol=1e-12)
