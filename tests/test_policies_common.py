"""Shared pi0-family pieces: backbone variants identical to LeRobot's, the tiny variant, the local text tokenizer."""

from __future__ import annotations

from unittest import mock

import lerobot.policies.pi05.modeling_pi05 as core_pi05
import pytest
from transformers import AutoTokenizer

from lerobot_fastplus.policies.common import (
    GEMMA_VARIANTS,
    PALIGEMMA_VOCAB_SIZE,
    expert_hf_config,
    gemma_variant,
    paligemma_hf_config,
    write_paligemma_layout_tokenizer,
)


class _Captured(Exception):
    pass


def core_hf_configs(image_size: int) -> tuple[dict, dict]:
    """The PaliGemma and expert configs LeRobot's pi05 builds for gemma_2b + gemma_300m (without building)."""
    seen = {}

    def paligemma(config):
        seen["paligemma"] = config.to_dict()
        return core_pi05.nn.Module()

    def expert(config):
        seen["expert"] = config.to_dict()
        raise _Captured

    with (
        mock.patch.object(core_pi05, "PaliGemmaForConditionalGenerationWithPiGemma", paligemma),
        mock.patch.object(core_pi05, "PiGemmaForCausalLM", expert),
        pytest.raises(_Captured),
    ):
        core_pi05.PaliGemmaWithExpertModel(
            core_pi05.get_gemma_config("gemma_2b"), core_pi05.get_gemma_config("gemma_300m"),
            use_adarms=[False, True], image_size=image_size,
        )  # fmt: skip
    return seen["paligemma"], seen["expert"]


def test_published_variants_give_exactly_lerobots_configs() -> None:
    core_paligemma, core_expert = core_hf_configs(224)
    assert paligemma_hf_config("gemma_2b", 224).to_dict() == core_paligemma
    assert expert_hf_config("gemma_300m").to_dict() == core_expert


def test_tiny_variant_is_small_and_consistent() -> None:
    tiny = gemma_variant("gemma_tiny")
    assert (tiny.width, tiny.depth, tiny.num_heads) == (64, 2, 8)
    config = paligemma_hf_config("gemma_tiny", 64)
    assert config.vision_config.num_hidden_layers == 1
    assert config.vision_config.projection_dim == config.text_config.hidden_size == 64
    assert config.text_config.vocab_size == PALIGEMMA_VOCAB_SIZE
    assert set(GEMMA_VARIANTS) == {"gemma_2b", "gemma_300m", "gemma_tiny"}
    with pytest.raises(ValueError, match="unknown Gemma variant 'gemma_9b'"):
        gemma_variant("gemma_9b")


def test_local_text_tokenizer_has_the_paligemma_id_layout(tmp_path) -> None:
    path = write_paligemma_layout_tokenizer(tmp_path / "tok", ["pick", "cube"])
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert len(tokenizer) == PALIGEMMA_VOCAB_SIZE
    assert tokenizer.convert_tokens_to_ids(["<pad>", "<eos>", "<bos>", "<loc0000>", "<seg000>", "<seg127>"]) == [
        0, 1, 2, 256000, 257024, 257151,
    ]  # fmt: skip
    ids = tokenizer("Task: pick cube, State: 0 255;\nAction: ")["input_ids"]
    assert ids[0] == 2 and tokenizer.unk_token_id not in ids
    assert tokenizer.convert_ids_to_tokens(ids[1:]) == [
        "Task", ":", "pick", "cube", ",", "State", ":", "0", "255", ";", "Action", ":",
    ]  # fmt: skip
