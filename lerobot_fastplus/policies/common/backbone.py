"""PaliGemma backbone / Gemma expert variants, including a tiny one for tests and quick CPU experiments.

LeRobot's pi0-family models accept only ``gemma_2b`` / ``gemma_300m`` and build the SigLIP tower with fixed
So400m sizes. Here the Hugging Face configs are built from a variant name: the two published variants give
exactly LeRobot's configs (so its checkpoints load unchanged), and ``gemma_tiny`` gives a 2-layer Gemma of
width 64 with a 1-layer SigLIP that trains in well under a second per step on CPU.
"""

from __future__ import annotations

from lerobot.policies.pi05.modeling_pi05 import GemmaConfig, get_gemma_config
from transformers import GemmaConfig as HFGemmaConfig
from transformers import PaliGemmaConfig
from transformers.models.auto import CONFIG_MAPPING

PALIGEMMA_VOCAB_SIZE = 257152
TINY_VARIANT = "gemma_tiny"
GEMMA_VARIANTS: dict[str, GemmaConfig] = {
    "gemma_2b": get_gemma_config("gemma_2b"),
    "gemma_300m": get_gemma_config("gemma_300m"),
    # 8 heads like the published variants: LeRobot's joint attention assumes 8 query heads.
    TINY_VARIANT: GemmaConfig(width=64, depth=2, mlp_dim=128, num_heads=8, num_kv_heads=1, head_dim=16),
}
# SigLIP of the tiny variant (its projection width is the text width).
TINY_VISION = {
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "patch_size": 16,
}


def gemma_variant(name: str) -> GemmaConfig:
    """Sizes of a Gemma variant; raises with the accepted names."""
    if name not in GEMMA_VARIANTS:
        raise ValueError(f"unknown Gemma variant {name!r}; use one of {sorted(GEMMA_VARIANTS)}.")
    return GEMMA_VARIANTS[name]


def paligemma_hf_config(
    variant: str, image_size: int, *, use_adarms: bool = False, text_dtype: str = "float32"
) -> PaliGemmaConfig:
    """PaliGemma config as LeRobot's pi05 builds it; ``gemma_tiny`` also shrinks the SigLIP tower. ``text_dtype`` is
    the dtype Hugging Face builds the text model in (LeRobot's: float32, cast afterwards). SigLIP is always built in
    float32: pi05 keeps it there, and its truncated-normal init is broken in bf16 (values clamped to +-2)."""
    text = gemma_variant(variant)
    config = CONFIG_MAPPING["paligemma"]()
    config._vocab_size = PALIGEMMA_VOCAB_SIZE
    config.image_token_index = PALIGEMMA_VOCAB_SIZE
    tc = config.text_config
    tc.hidden_size, tc.intermediate_size, tc.num_hidden_layers = text.width, text.mlp_dim, text.depth
    tc.num_attention_heads, tc.num_key_value_heads, tc.head_dim = text.num_heads, text.num_kv_heads, text.head_dim
    tc.hidden_activation = "gelu_pytorch_tanh"
    tc.dtype = text_dtype
    tc.vocab_size = PALIGEMMA_VOCAB_SIZE
    tc.use_adarms = use_adarms
    tc.adarms_cond_dim = text.width if use_adarms else None
    vc = config.vision_config
    vc.image_size = image_size
    vc.intermediate_size = 4304
    vc.projection_dim = 2048
    vc.projector_hidden_act = "gelu_fast"
    vc.dtype = "float32"
    if variant == TINY_VARIANT:
        for key, value in TINY_VISION.items():
            setattr(vc, key, value)
        vc.projection_dim = text.width
    return config


def expert_hf_config(variant: str, *, use_adarms: bool = True, dtype: str = "float32") -> HFGemmaConfig:
    """Gemma config of the action expert, as LeRobot's pi05 builds it (``dtype`` as in ``paligemma_hf_config``)."""
    sizes = gemma_variant(variant)
    return CONFIG_MAPPING["gemma"](
        head_dim=sizes.head_dim,
        hidden_size=sizes.width,
        intermediate_size=sizes.mlp_dim,
        num_attention_heads=sizes.num_heads,
        num_hidden_layers=sizes.depth,
        num_key_value_heads=sizes.num_kv_heads,
        vocab_size=PALIGEMMA_VOCAB_SIZE,
        hidden_activation="gelu_pytorch_tanh",
        dtype=dtype,
        use_adarms=use_adarms,
        adarms_cond_dim=sizes.width if use_adarms else None,
    )
