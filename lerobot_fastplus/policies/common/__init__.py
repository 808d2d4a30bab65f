"""Pieces shared by the plugin's pi0-family policies: backbone variants (incl. a tiny one), text tokenizers,
checkpoint loading, decoding, processors and config checks. Imports like ``policies``: ``fast``,
``fast_action_step`` and ``data`` only."""

from lerobot_fastplus.policies.common.backbone import (
    GEMMA_VARIANTS,
    PALIGEMMA_VOCAB_SIZE,
    TINY_VISION,
    expert_hf_config,
    gemma_variant,
    paligemma_hf_config,
)
from lerobot_fastplus.policies.common.text_tokenizer import (
    write_dataset_words_tokenizer,
    write_paligemma_layout_tokenizer,
)

__all__ = [
    "GEMMA_VARIANTS",
    "PALIGEMMA_VOCAB_SIZE",
    "TINY_VISION",
    "expert_hf_config",
    "gemma_variant",
    "paligemma_hf_config",
    "write_dataset_words_tokenizer",
    "write_paligemma_layout_tokenizer",
]
