"""Pieces shared by the plugin's pi0-family policies: backbone variants (incl. a tiny one) and text tokenizers."""

from lerobot_fastplus.policies.common.backbone import (
    GEMMA_VARIANTS,
    PALIGEMMA_VOCAB_SIZE,
    TINY_VISION,
    expert_hf_config,
    gemma_variant,
    paligemma_hf_config,
)
from lerobot_fastplus.policies.common.text_tokenizer import write_paligemma_layout_tokenizer

__all__ = [
    "GEMMA_VARIANTS",
    "PALIGEMMA_VOCAB_SIZE",
    "TINY_VISION",
    "expert_hf_config",
    "gemma_variant",
    "paligemma_hf_config",
    "write_paligemma_layout_tokenizer",
]
