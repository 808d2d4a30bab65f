"""pi05_ki's opt-in remedies for closed-loop control: ordinal starting embeddings for the prompt's 256 state-bin
tokens, and temporal ensembling of overlapping chunks."""

from __future__ import annotations

import pytest
import torch

from lerobot_fastplus.policies.common import write_paligemma_layout_tokenizer
from lerobot_fastplus.policies.common.state_embeddings import (
    ordinal_codes,
    set_ordinal_state_embeddings,
    state_bin_token_ids,
)
from lerobot_fastplus.policies.pi05_ki.configuration_pi05_ki import PI05KIConfig


def test_neighbouring_bins_start_close_and_far_bins_apart(tmp_path) -> None:
    text = write_paligemma_layout_tokenizer(tmp_path / "text", ["reach"])
    table = torch.randn(300_000, 64) * 0.02
    untouched = table[5].clone()
    set_ordinal_state_embeddings(table, str(text))
    bins = table[state_bin_token_ids(str(text))]
    similarity = torch.nn.functional.cosine_similarity
    assert similarity(bins[100], bins[101], dim=0) > 0.8
    assert similarity(bins[100], bins[101], dim=0) > similarity(bins[100], bins[140], dim=0)
    assert abs(bins.std().item() - 0.02) < 0.005  # the table's own spread
    assert torch.equal(table[5], untouched)  # other tokens keep their values
    assert ordinal_codes(256, 7).shape == (256, 7)


def test_a_tokenizer_that_splits_bin_numbers_is_refused(tmp_path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    model = Tokenizer(models.WordLevel({"<unk>": 0, "1": 1, "2": 2}, unk_token="<unk>"))
    model.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=model, unk_token="<unk>").save_pretrained(tmp_path / "digits")
    with pytest.raises(ValueError, match="one token per state bin"):
        state_bin_token_ids(str(tmp_path / "digits"))


def test_ordinal_embeddings_with_a_pretrained_backbone_are_refused_at_config_time() -> None:
    with pytest.raises(ValueError, match="drop it or init_from"):
        PI05KIConfig(ordinal_state_embeddings=True, init_from="lerobot/pi05_base")


def test_temporal_ensembling_needs_one_action_per_chunk_at_config_time() -> None:
    with pytest.raises(ValueError, match="n_action_steps=1"):
        PI05KIConfig(temporal_ensemble_coeff=0.01, n_action_steps=5)
    assert PI05KIConfig(temporal_ensemble_coeff=0.01, n_action_steps=1).temporal_ensemble_coeff == 0.01
