"""Configuration of the plugin's ``pi0_fast``: LeRobot's pi0-FAST with split tokens and constrained decoding.

``pi0_fast`` is a core LeRobot type and draccus refuses a second registration under that name, so importing
this module *replaces* the registry entry with :class:`PI0FastConfig`, a subclass of the core config (every
core field keeps its name and default, so a core ``config.json`` parses). The replacement is logged and never
raises (see ``lerobot_fastplus.__init__``). LeRobot then resolves this module's siblings ``modeling_pi0_fast``
(``PI0FastPolicy``) and ``processor_pi0_fast`` (``make_pi0_fast_pre_post_processors``) by naming convention.
Core's own config class still resolves to ``pi0_fast`` too (:class:`_CoreClassKeepsItsName`), so scripts that build
``lerobot.policies.pi0_fast.PI0FastConfig`` directly keep working with the plugin installed.

Additions to the core fields:

* ``paligemma_variant`` also accepts ``gemma_tiny`` (tests, CPU experiments);
* ``action_layout``: ``"split"`` (``BOS, sub-chunk tokens, SPLIT, ..., EOS``, this plugin's layout) or
  ``"core"`` (core pi0_fast's ``<bos> Action: <FAST tokens> |``, for checkpoints trained by core LeRobot).
  ``None`` (the default) is resolved by the policy: ``"core"`` when loading a checkpoint whose config does not
  name a layout (it was written by core LeRobot), ``"split"`` otherwise;
* ``split_every``: steps per sub-chunk (the FAST tokenizer's time horizon);
* ``init_from``: a pi0_fast checkpoint (hub id such as ``lerobot/pi0fast-base``, or a local directory; core's or
  this plugin's) whose weights initialise a new policy, loaded strictly. Unlike ``--policy.pretrained_path``, the
  new policy keeps this plugin's split layout, processors and FAST step; the checkpoint's layout and processors are
  not used;
* ``action_bos_token_id`` / ``action_split_token_id`` / ``action_eos_token_id``: vocabulary ids of the
  layout's BOS / SPLIT / EOS. FAST id ``f`` maps to ``257152 - 1 - fast_skip_tokens - f`` and text lies below,
  so these must be among the ``fast_skip_tokens`` skipped ids at the top of the vocabulary (PaliGemma's
  ``<seg>`` tokens, which neither FAST tokens nor ordinary text use).

Core fields with a changed default: ``normalization_mapping`` normalises the state with QUANTILES (core: MEAN_STD),
as openpi does for pi0-FAST: the prompt writes the state as 256 bins over [-1, 1], and under MEAN_STD every
``|z| > 1`` lands in the first or last bin (a checkpoint's config.json names its own mapping, so core checkpoints
load as they were). Actions stay MEAN_STD.

Core fields with a changed meaning: ``action_tokenizer_name`` is the FAST tokenizer (a directory, e.g. written
by ``fastplus-train-tokenizer``, or a hub id); the decoded horizon is ``chunk_size`` (core decodes
``n_action_steps`` steps, wrong when they differ); ``max_action_tokens`` bounds the layout's length in
training and ``max_decoding_steps`` the generated tokens. ``rtc_config`` (set by ``lerobot-rollout
--inference.type=rtc``) turns on prefix conditioning, not RTC's inpainting: the still-queued actions that cover the
inference delay are re-encoded as whole FAST sub-chunks and forced as the start of the next decode (see
``PI0FastPolicy.predict_action_chunk``). It needs the split layout: core's layout (one FAST sequence per chunk) is
refused, when the config names it or when the policy is built; a core checkpoint's config.json with an ``rtc_config``
loads without it, with a warning (core never ran RTC on pi0_fast).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from lerobot.configs import PreTrainedConfig
from lerobot.configs.types import NormalizationMode
from lerobot.policies.pi0_fast.configuration_pi0_fast import PI0FastConfig as CorePI0FastConfig
from lerobot.policies.rtc.configuration_rtc import RTCConfig

from lerobot_fastplus.fast.tokenizer import FastTokenizer
from lerobot_fastplus.policies.common.backbone import GEMMA_VARIANTS, PALIGEMMA_VOCAB_SIZE
from lerobot_fastplus.policies.common.checkpoint import locate_init_weights
from lerobot_fastplus.policies.common.validation import (
    check_fast_tokenizer_path_when_parsed,
    policy_fast_tokenizer,
    require_action_feature,
    resolve_split_every,
    show_config_errors_on_the_cli,
)

logger = logging.getLogger(__name__)

TYPE_NAME = "pi0_fast"
ACTION_LAYOUTS = ("split", "core")
ACTION_HEADS = ("embedding", "lm_head")
DEFAULT_SKIP_TOKENS = 128
# PaliGemma's <seg> ids (the 128 skipped ids at the top of the vocabulary).
SEG_IDS = range(PALIGEMMA_VOCAB_SIZE - DEFAULT_SKIP_TOKENS, PALIGEMMA_VOCAB_SIZE)
RTC_REFUSAL = (
    "pi0_fast with action_layout='core' cannot run with RTC: its prefix conditioning forces whole split-layout "
    "sub-chunks, and core's layout encodes the chunk as one FAST sequence; use --inference.type=sync, or fine-tune "
    "with action_layout='split' (--policy.init_from=<this checkpoint>)."
)


class _CoreClassKeepsItsName(type(CorePI0FastConfig)):
    """Metaclass of :class:`PI0FastConfig`: the plugin's class compares equal (``==``, never ``is``) to core's.

    The registry maps ``pi0_fast`` to the plugin's class, and draccus names a config class by comparing it with the
    registry's values using ``==`` (``ChoiceRegistryBase.get_choice_name``). Without this, core's class would have
    no name: its ``.type``, saving it and ``make_pre_post_processors`` on it raise "Cannot find choice name". Equal
    to the registered class, it is named ``pi0_fast`` again, while parsing a ``pi0_fast`` config still gives the
    plugin's class. Only this one equality changes: hashes stay distinct (dicts and sets keyed by class still tell
    the two apart) and ``is``, ``isinstance`` and ``issubclass`` are untouched. The alternatives patch draccus' or
    LeRobot's code, or register core's class under a second name, which would change the type core writes.
    """

    def __eq__(cls, other: object) -> bool:
        # the plugin's class, not its subclasses (it may be asked while the class is still being created)
        return cls is other or (other is CorePI0FastConfig and cls.__bases__ == (CorePI0FastConfig,))

    __hash__ = type.__hash__


@dataclass
class PI0FastConfig(CorePI0FastConfig, metaclass=_CoreClassKeepsItsName):
    # Normalisation per feature type. Unlike core, the state uses QUANTILES: the prompt writes the state as 256 bins
    # over [-1, 1], and under MEAN_STD every |z| > 1 lands in the first or last bin. Actions stay MEAN_STD (fit the
    # FAST tokenizer with --normalization_mode=MEAN_STD). A checkpoint keeps the mapping its config.json names.
    normalization_mapping: dict[str, NormalizationMode] = field(
        default_factory=lambda: {
            "VISUAL": NormalizationMode.IDENTITY,
            "STATE": NormalizationMode.QUANTILES,
            "ACTION": NormalizationMode.MEAN_STD,
        }
    )
    # Most tokens generated per chunk. Unset (None): the exact grammar's bound, the longest sequence the layout allows
    # (known once the policy has its FAST tokenizer and action dimension); a smaller value is refused then.
    max_decoding_steps: int | None = None
    # Action token layout: "split" (BOS, sub-chunk tokens, SPLIT, ..., EOS; this plugin's) or "core" (core
    # pi0_fast's "<bos> Action: <FAST tokens> |", for checkpoints trained by core LeRobot). Unset (None): "core" when
    # loading a checkpoint whose config.json names no layout, "split" otherwise.
    action_layout: str | None = None
    # Output head that scores the action ids: "embedding" (the input embedding, tied as in PaliGemma and pi05_ki;
    # the split layout's default) or "lm_head" (core's untied copy: core checkpoints, and split-layout checkpoints
    # saved before this field existed). None is resolved by the policy, like action_layout.
    action_head: str | None = None
    # Split layout: steps per FAST sub-chunk (the FAST tokenizer's time horizon). Unset (None): 10 steps, or
    # chunk_size when the chunk is shorter.
    split_every: int | None = None
    # Vocabulary id of the action sequence's BOS: one of the fast_skip_tokens ids at the top of the vocabulary
    # (PaliGemma's <seg> ids, 257024..257151), which neither FAST tokens nor text use.
    action_bos_token_id: int = SEG_IDS[0]
    # Vocabulary id of SPLIT, the separator between sub-chunks: one of the fast_skip_tokens ids (257024..257151).
    action_split_token_id: int = SEG_IDS[1]
    # Vocabulary id of EOS, which ends the action sequence and pads a batch: one of the fast_skip_tokens ids.
    action_eos_token_id: int = SEG_IDS[2]
    # Set by lerobot-rollout --inference.type=rtc. For pi0_fast this is prefix conditioning, not RTC's inpainting:
    # the queued actions that run during inference are re-encoded as the ceil(delay / split_every) whole sub-chunks
    # that cover the delay (at most execution_horizon steps, never the whole chunk) and forced as the decode's start;
    # the rest of the chunk is decoded after them. Split layout only; max_guidance_weight and
    # prefix_attention_schedule do not apply.
    rtc_config: RTCConfig | None = None
    # Weights that initialise a new policy: a pi0_fast checkpoint (hub id such as lerobot/pi0fast-base, or a local
    # pretrained_model directory; core's or this plugin's), loaded strictly. Unlike --policy.pretrained_path, the
    # policy keeps this plugin's split layout, processors and FAST step. None: random initialisation.
    init_from: str | None = None

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
        if self.rtc_config is not None and self.action_layout == "core":
            raise ValueError(RTC_REFUSAL)
        if self.action_layout is not None and self.action_layout not in ACTION_LAYOUTS:
            raise ValueError(
                f"action_layout={self.action_layout!r}; use 'split' (this plugin's layout) or 'core' (checkpoints "
                "trained by LeRobot's core pi0_fast)."
            )
        if self.action_head is not None and self.action_head not in ACTION_HEADS:
            raise ValueError(f"action_head={self.action_head!r}; use one of {ACTION_HEADS}.")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 is greedy), got {self.temperature}.")
        if self.max_decoding_steps is not None and self.max_decoding_steps < 1:
            raise ValueError(
                f"max_decoding_steps must be positive (or unset: the exact grammar's bound), got "
                f"{self.max_decoding_steps}."
            )
        self.split_every = resolve_split_every(self.split_every, self.chunk_size)
        self.validate_layout()
        check_fast_tokenizer_path_when_parsed(self, self.action_tokenizer_name, "--policy.action_tokenizer_name")

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

    def locate_init_weights(self) -> Path:
        """``model.safetensors`` of ``init_from``, checked before a policy builds its model."""
        return locate_init_weights(self.init_from, "pi0_fast")

    def validate_layout(self) -> None:
        """Check the layout fields (``split_every`` does not apply to core's layout, one FAST chunk)."""
        if self.action_layout != "core" and not 0 < self.split_every <= self.chunk_size:
            raise ValueError(
                f"split_every={self.split_every} must be in [1, chunk_size={self.chunk_size}]: it is the number of "
                "steps per FAST sub-chunk (use the FAST tokenizer's time horizon, 10 by default). A last sub-chunk "
                "shorter than split_every is allowed."
            )
        if not 0 < self.fast_skip_tokens < PALIGEMMA_VOCAB_SIZE:
            raise ValueError(f"fast_skip_tokens={self.fast_skip_tokens} must be in [1, {PALIGEMMA_VOCAB_SIZE}).")
        shortest = 1 + 2 * self.n_subchunks  # BOS, then one token and one SPLIT/EOS per sub-chunk
        if self.max_action_tokens < shortest:
            raise ValueError(
                f"max_action_tokens={self.max_action_tokens} cannot hold even the shortest layout of "
                f"{self.n_subchunks} sub-chunks ({shortest} tokens with BOS); raise it (256 fits most data) or raise "
                "split_every."
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
