"""Ordinal starting embeddings for the 256 state-bin tokens of pi0.5's prompt (``State: 12 250 ...``).

pi0.5 reads the robot state only as text: each normalised value becomes one of 256 bin numbers. A backbone trained
from scratch starts with unrelated random embeddings for those numbers and must learn from data that bin 120 lies
between 119 and 121 before it can steer on a small offset. This gives the bin tokens a smooth code instead
(sines and cosines of the bin value at geometrically spaced frequencies, scaled to the table's own spread), so
neighbouring bins start close. Only for a model trained from scratch with a text tokenizer that has one token per
bin number (the word-level stand-in of ``write_paligemma_layout_tokenizer``); pretrained backbones already know
their number tokens.
"""

from __future__ import annotations

import math

import torch
from transformers import AutoTokenizer

N_BINS = 256


def state_bin_token_ids(text_tokenizer_name: str) -> list[int]:
    """Ids of the tokens "0" .. "255"; raises when the tokenizer splits a bin number or does not know it."""
    tokenizer = AutoTokenizer.from_pretrained(text_tokenizer_name)
    ids = [tokenizer.encode(str(b), add_special_tokens=False) for b in range(N_BINS)]
    if any(len(i) != 1 or i[0] == tokenizer.unk_token_id for i in ids):
        raise ValueError(
            f"ordinal_state_embeddings needs a text tokenizer with one token per state bin 0..255; "
            f"{text_tokenizer_name} splits or does not know some of them "
            "(use the word-level stand-in, docs/own_data.md)"
        )
    return [i[0] for i in ids]


def ordinal_codes(n_bins: int, width: int) -> torch.Tensor:
    """[n_bins, width] sines and cosines of the bin value, from half a period over all bins up to ~one per bin."""
    value = torch.arange(n_bins, dtype=torch.float64) / (n_bins - 1)
    half = width // 2
    frequencies = math.pi * torch.logspace(0, math.log10(n_bins / 2), half, dtype=torch.float64)
    angles = value[:, None] * frequencies[None, :]
    codes = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    return torch.nn.functional.pad(codes, (0, width - codes.shape[1]))


@torch.no_grad()
def set_ordinal_state_embeddings(table: torch.Tensor, text_tokenizer_name: str) -> None:
    """Overwrite the state-bin rows of the embedding ``table`` [vocab, width] with ordinal codes of the same spread."""
    ids = torch.tensor(state_bin_token_ids(text_tokenizer_name), device=table.device)
    codes = ordinal_codes(N_BINS, table.shape[1])
    scale = table.float().std() / codes.std()
    table[ids] = (codes * scale).to(device=table.device, dtype=table.dtype)
