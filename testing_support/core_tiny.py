"""LeRobot's *core* pi05 / pi0_fast at the plugin's Gemma variants, for parity tests and benchmarks, and the
reduced-depth published widths (``with_depth``) that memory and integration checks register as variants.

Core pi05 and pi0_fast hard-code the published Gemma sizes (and core pi0_fast the 224 px So400m SigLIP). The
builders here construct the unmodified core classes while the module-level functions they call are swapped
(only during construction) for the plugin's variant sizes, so the result has exactly the parameters of a
plugin policy with the same variants: ``gemma_tiny`` (which also shrinks SigLIP), or e.g. the published widths
at a reduced depth (``with_depth``) registered under a name of their own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import lerobot.policies.pi0_fast.modeling_pi0_fast as core_pi0_fast
import lerobot.policies.pi05.modeling_pi05 as core_pi05
from lerobot.policies.pi0_fast import PI0FastConfig, PI0FastPolicy
from lerobot.policies.pi05 import PI05Config, PI05Policy
from lerobot.policies.pi05.modeling_pi05 import GemmaConfig

from lerobot_fastplus.policies.common.backbone import TINY_VARIANT, gemma_variant, paligemma_hf_config


@contextmanager
def core_sizes(module: Any, sizes: dict[str, str], backbone: str, image_size: int) -> Iterator[None]:
    """While active, ``module`` builds core variant ``name`` with the sizes of the plugin variant ``sizes[name]``,
    and SigLIP as the plugin builds it for the ``backbone`` variant at ``image_size``."""
    build_paligemma = module.PaliGemmaForConditionalGenerationWithPiGemma

    def paligemma(config: Any) -> Any:
        config.vision_config = paligemma_hf_config(backbone, image_size).vision_config
        return build_paligemma(config=config)

    with (
        mock.patch.object(module, "get_gemma_config", lambda name: gemma_variant(sizes[name])),
        mock.patch.object(module, "PaliGemmaForConditionalGenerationWithPiGemma", paligemma),
    ):
        yield


def core_pi05_with_variants(config: PI05Config, backbone: str, expert: str) -> PI05Policy:
    """A core ``PI05Policy`` whose backbone and expert have the sizes of the plugin variants ``backbone`` and
    ``expert`` (``config.paligemma_variant`` / ``action_expert_variant`` only name which is which)."""
    sizes = {config.paligemma_variant: backbone, config.action_expert_variant: expert}
    if len(sizes) == 1 and backbone != expert:
        raise ValueError("give the core config two different variant names to build two different sizes")
    with core_sizes(core_pi05, sizes, backbone, config.image_resolution[0]):
        return PI05Policy(config)


def core_pi05_tiny(config: PI05Config) -> PI05Policy:
    """A core ``PI05Policy`` whose backbone and expert are ``gemma_tiny`` (config variants are ignored)."""
    return core_pi05_with_variants(config, TINY_VARIANT, TINY_VARIANT)


def core_pi0_fast_with_variant(config: PI0FastConfig, variant: str) -> PI0FastPolicy:
    """A core ``PI0FastPolicy`` whose PaliGemma has the sizes of the plugin variant ``variant`` and SigLIP at
    ``config.image_resolution``. Its FAST and text tokenizers are not loaded (core fetches them from the hub in
    ``__init__``): the result can be saved or compared, not trained or run."""
    with (
        core_sizes(core_pi0_fast, {config.paligemma_variant: variant}, variant, config.image_resolution[0]),
        mock.patch.object(core_pi0_fast, "AutoProcessor"),
        mock.patch.object(core_pi0_fast, "AutoTokenizer"),
    ):
        return PI0FastPolicy(config)


def with_depth(variant: str, depth: int) -> GemmaConfig:
    """The sizes of ``variant`` with ``depth`` layers: the published widths (full vocabulary and SigLIP) at a depth
    a small machine holds, for memory and integration checks. Not a variant until registered under a name of its
    own in ``GEMMA_VARIANTS``."""
    sizes = gemma_variant(variant)
    return GemmaConfig(sizes.width, depth, sizes.mlp_dim, sizes.num_heads, sizes.num_kv_heads, sizes.head_dim)
