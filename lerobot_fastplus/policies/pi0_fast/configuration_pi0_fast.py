"""Configuration of the plugin's ``pi0_fast``: LeRobot's pi0-FAST with split tokens and constrained decoding.

``pi0_fast`` is a core LeRobot type and draccus refuses a second registration under that name, so importing
this module *replaces* the registry entry with :class:`PI0FastConfig`, a subclass of the core config (every
core field keeps its name and default, so a core ``config.json`` parses). The replacement is logged and never
raises (see ``lerobot_fastplus.__init__``). LeRobot then resolves this module's siblings ``modeling_pi0_fast``
(``PI0FastPolicy``) and ``processor_pi0_fast`` (``make_pi0_fast_pre_post_processors``) by naming convention.

Additions to the core fields:

* ``paligemma_variant`` also accepts ``gemma_tiny`` (tests, CPU experiments);
* ``action_layout``: ``"split"`` (``BOS, sub-chunk tokens, SPLIT, ..., EOS``, this plugin's layout) or
  ``"core"`` (core pi0_fast's ``<bos> Action: <FAST tokens> |``, for checkpoints trained by core LeRobot).
  ``None`` (the default) is resolved by the policy: ``"core"`` when loading a checkpoint whose config does not
  name a layout (it was written by core LeRobot), ``"split"`` otherwise;
* ``split_every``: steps per sub-chunk (the FAST tokenizer's time horizon);
* ``action_bos_token_id`` / ``action_split_token_id`` / ``action_eos_token_id``: vocabulary ids of the
  layout's BOS / SPLIT / EOS. FAST id ``f`` maps to ``257152 - 1 - fast_skip_tokens - f`` and text lies below,
  so these must be among the ``fast_skip_tokens`` skipped ids at the top of the vocabulary (PaliGemma's
  ``<seg>`` tokens, which neither FAST tokens nor ordinary text use).

Core fields with a changed meaning: ``action_tokenizer_name`` is the FAST tokenizer (a directory, e.g. written
by ``fastplus-train-tokenizer``, or a hub id); the decoded horizon is ``chunk_size`` (core decodes
``n_action_steps`` steps, wrong when they differ); ``max_action_tokens`` bounds the layout's length in
training and ``max_decoding_steps`` the generated tokens. ``rtc_config`` must stay unset: real-time chunking
inpaints a chunk with a continuous denoiser, which an autoregressive token decoder does not have.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from lerobot.configs import PreTrainedConfig
from lerobot.policies.pi0_fast.configuration_pi0_fast import PI0FastConfig as CorePI0FastConfig

from lerobot_fastplus.fast.tokenizer import FastTokenizer
from lerobot_fastplus.policies.common.backbone import GEMMA_VARIANTS, PALIGEMMA_VOCAB_SIZE
from lerobot_fastplus.policies.common.validation import (
    policy_fast_tokenizer,
    require_action_feature,
    show_config_errors_on_the_cli,
)

logger = logging.getLogger(__name__)

TYPE_NAME = "pi0_fast"
ACTION_LAYOUTS = ("split", "core")
DEFAULT_SKIP_TOKENS = 128
# PaliGemma's <seg> ids (the 128 skipped ids at the top of the vocabulary).
SEG_IDS = range(PALIGEMMA_VOCAB_SIZE - DEFAULT_SKIP_TOKENS, PALIGEMMA_VOCAB_SIZE)
RTC_REFUSAL = (
    "pi0_fast cannot run with real-time chunking (RTC): RTC inpaints the next chunk against the previous one "
    "by guiding a continuous denoiser (flow matching), and pi0_fast decodes discrete FAST tokens "
    "autoregressively, with no denoiser to guide. Remove rtc_config (or --inference.type=rtc), or use pi05_ki, "
    "which samples with flow matching and supports RTC."
)


@dataclass
class PI0FastConfig(CorePI0FastConfig):
    action_layout: str | None = None
    split_every: int = 10
    action_bos_token_id: int = SEG_IDS[0]
    action_split_token_id: int = SEG_IDS[1]
    action_eos_token_id: int = SEG_IDS[2]

    def __post_init__(self) -> None:
        # The core __post_init__ accepts only the two published variants; its other checks are repeated here.
        PreTrainedConfig.__post_init__(self)
        if self.n_action_steps > self.chunk_size:
            raise ValueError(
                f"n_action_steps ({self.n_action_steps}) cannot be greater than chunk_size ({self.chunk_size})."
            )
        if self.paligemma_variant not in GEMMA_VARIANTS:
            raise ValueError(
                f"paligemma_variant={self.paligemma_variant!r} is unknown; use one of {sorted(GEMMA_VARIANTS)}."
            )
        if self.dtype not in ("bfloat16", "float32"):
            raise ValueError(f"dtype must be 'bfloat16' or 'float32', got {self.dtype!r}.")
        if self.rtc_config is not None:
            raise ValueError(RTC_REFUSAL)
        if self.action_layout is not None and self.action_layout not in ACTION_LAYOUTS:
            raise ValueError(
                f"action_layout={self.action_layout!r}; use 'split' (this plugin's layout) or 'core' (checkpoints "
                "trained by LeRobot's core pi0_fast)."
            )
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 is greedy), got {self.temperature}.")
        if self.max_decoding_steps < 1:
            raise ValueError(f"max_decoding_steps must be positive, got {self.max_decoding_steps}.")
        self.validate_layout()

    @property
    def n_subchunks(self) -> int:
        return 1 if self.action_layout == "core" else -(-self.chunk_size // self.split_every)

    @property
    def action_special_ids(self) -> tuple[int, int, int]:
        return self.action_bos_token_id, self.action_split_token_id, self.action_eos_token_id

    @property
    def fast_id_base(self) -> int:
        """Vocabulary id of FAST id 0; FAST id ``f`` maps to ``fast_id_base - f``."""
        return PALIGEMMA_VOCAB_SIZE - 1 - self.fast_skip_tokens

    def validate_features(self) -> None:
        """Refuse a dataset without an action, then add core's defaults (empty cameras, padded state)."""
        require_action_feature(self, "pi0_fast")
        super().validate_features()

    def load_fast_tokenizer(self, tokenizer: FastTokenizer | None = None) -> FastTokenizer:
        """The FAST tokenizer of a new policy (``action_tokenizer_name``) or the given one (a checkpoint's copy),
        checked against the action feature and, for a new split-layout policy, against ``split_every`` (core's
        layout encodes the whole chunk with a universal tokenizer such as FAST+)."""
        split_every = self.split_every if self.action_layout == "split" else None
        return policy_fast_tokenizer(
            self, self.action_tokenizer_name, "--policy.action_tokenizer_name", tokenizer, split_every
        )

    def validate_layout(self) -> None:
        """Check the layout fields. With ``action_layout=None`` the layout is only known once the policy is built
        (``"core"`` for a checkpoint written by core LeRobot, whose ``chunk_size`` may be below the default
        ``split_every``), so a ``split_every`` larger than ``chunk_size`` is refused when it resolves to split."""
        if self.action_layout == "split" and not 0 < self.split_every <= self.chunk_size:
            raise ValueError(
                f"split_every={self.split_every} must be in [1, chunk_size={self.chunk_size}]: it is the number of "
                "steps per FAST sub-chunk (use the FAST tokenizer's time horizon, 10 by default). A last sub-chunk "
                "shorter than split_every is allowed."
            )
        if not 0 < self.fast_skip_tokens < PALIGEMMA_VOCAB_SIZE:
            raise ValueError(f"fast_skip_tokens={self.fast_skip_tokens} must be in [1, {PALIGEMMA_VOCAB_SIZE}).")
        shortest = 1 + 2 * self.n_subchunks  # BOS, then one token and one SPLIT/EOS per sub-chunk
        if self.max_action_tokens < shortest or self.max_decoding_steps < shortest - 1:
            raise ValueError(
                f"max_action_tokens={self.max_action_tokens} / max_decoding_steps={self.max_decoding_steps} cannot "
                f"hold even the shortest layout of {self.n_subchunks} sub-chunks ({shortest} tokens with BOS); raise "
                "them (256 fits most data) or raise split_every."
            )
        skipped = range(self.fast_id_base + 1, PALIGEMMA_VOCAB_SIZE)
        names = ("action_bos_token_id", "action_split_token_id", "action_eos_token_id")
        for name, value in zip(names, self.action_special_ids, strict=True):
            if value not in skipped:
                raise ValueError(
                    f"{name}={value} collides with FAST or text ids: FAST id f maps to {self.fast_id_base} - f and "
                    f"text lies below, so the layout's BOS/SPLIT/EOS must be among the {self.fast_skip_tokens} "
                    f"skipped ids {skipped[0]}..{skipped[-1]} (PaliGemma's <seg> tokens). The defaults "
                    f"{SEG_IDS[0]}, {SEG_IDS[1]}, {SEG_IDS[2]} work."
                )
        if len(set(self.action_special_ids)) != 3:
            raise ValueError(f"{', '.join(names)} must be three different ids; got {self.action_special_ids}.")


def _take_over_core_type() -> None:
    """Point LeRobot's ``pi0_fast`` type at this config (draccus forbids registering the name twice)."""
    registry = PreTrainedConfig._choice_registry
    previous = registry.get(TYPE_NAME)
    if previous is PI0FastConfig:
        return
    registry[TYPE_NAME] = PI0FastConfig
    logger.info(
        "lerobot_fastplus: policy type '%s' now resolves to %s.%s (was %s); core pi0_fast checkpoints still load "
        "and are decoded with their own token layout.",
        TYPE_NAME,
        PI0FastConfig.__module__,
        PI0FastConfig.__qualname__,
        f"{previous.__module__}.{previous.__qualname__}" if previous is not None else "unregistered",
    )


_take_over_core_type()
show_config_errors_on_the_cli()
