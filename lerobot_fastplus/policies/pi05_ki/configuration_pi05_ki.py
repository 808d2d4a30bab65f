"""Configuration of ``pi05_ki``: pi0.5 trained with Knowledge Insulation (arXiv 2505.23705).

A superset of LeRobot's ``PI05Config``. Additions:

* ``paligemma_variant`` / ``action_expert_variant`` also accept ``gemma_tiny`` (tests, CPU experiments);
* ``text_tokenizer_name``: hub id or local directory of the prompt tokenizer (PaliGemma's by default);
* ``fast_tokenizer_path``: the FAST tokenizer whose split-layout tokens of the target chunk the backbone
  learns to predict (``split_every`` steps per sub-chunk, at most ``max_action_tokens`` tokens);
* ``action_bos_token_id`` / ``action_split_token_id`` / ``action_eos_token_id``: vocabulary ids of the
  layout's BOS / SPLIT / EOS. FAST id ``f`` maps to ``257023 - f`` (PaliGemma's last 128 ids, the ``<seg>``
  tokens, are skipped) and fills the ``<loc>`` ids downwards, text ids lie below; the separators therefore
  must be ``<seg>`` ids (257024..257151), which neither FAST tokens nor prompts ever use;
* ``fast_loss_weight`` / ``flow_loss_weight``: loss = w_fast * CE(FAST) + w_flow * flow MSE (KI: 1 and 1);
* ``fast_ce_vocabulary``: ``"action"`` (default) normalises the CE over the action ids only (FAST ids, SPLIT,
  EOS: what the autoregressive decoder may emit), ``"full"`` over the whole 257,152-id vocabulary;
* ``action_decoding``: ``"flow"`` (pi05's flow sampling, RTC-capable) or ``"fast"`` (autoregressive decoding
  from the backbone's FAST head under the exact grammar, for comparison; ``fast_decoding_temperature`` 0 is
  greedy, ``max_decoding_steps`` defaults to the longest sequence the layout allows);
* ``expert_state_token``: also give the action expert the normalised state as one continuous token (pi0's way);
* ``flow_noise_scale``: scale of the noise flow sampling starts from (1: pi05's sampling; 0: deterministic);
* ``report_disagreement``: also decode each chunk the other way and report the two chunks' disagreement
  (``policy.last_disagreement``, logged), a per-chunk confidence signal;
* ``init_from``: a pi05 or pi05_ki checkpoint (hub id or local directory) whose weights initialise a new
  policy, loaded strictly. Use it with ``--policy.type=pi05_ki`` to fine-tune from ``lerobot/pi05_base`` while
  LeRobot builds this policy's own processors (with ``--policy.pretrained_path`` it would reuse the pi05
  checkpoint's processors, which produce no FAST tokens; the policy then tokenizes the targets itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lerobot.configs import PreTrainedConfig
from lerobot.policies.pi05.configuration_pi05 import PI05Config

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

N_SEG_TOKENS = 128
FAST_ID_BASE = PALIGEMMA_VOCAB_SIZE - 1 - N_SEG_TOKENS  # FAST id f -> FAST_ID_BASE - f
SEG_IDS = range(FAST_ID_BASE + 1, PALIGEMMA_VOCAB_SIZE)
ACTION_DECODINGS = ("flow", "fast")
CE_VOCABULARIES = ("action", "full")
INIT_WEIGHTS = "pi05 / pi05_ki"  # the checkpoints init_from accepts, as named in errors
# lerobot-rollout sets rtc_config on an already built policy, so PI05KIPolicy.init_rtc_processor repeats this check.
FAST_DECODING_RTC_REFUSAL = (
    "action_decoding='fast' cannot run with RTC: real-time chunking inpaints with the flow denoiser. "
    "Use action_decoding='flow' with RTC (--inference.type=rtc), or disable rtc_config (--inference.type=sync)."
)


@PreTrainedConfig.register_subclass("pi05_ki")
@dataclass
class PI05KIConfig(PI05Config):
    # Text tokenizer of the prompt: a hub id or a local directory. The default is PaliGemma's, gated on the hub;
    # offline, use a local copy or a stand-in with PaliGemma's id layout (docs/own_data.md).
    text_tokenizer_name: str = "google/paligemma-3b-pt-224"
    # FAST tokenizer of the target chunks the backbone learns to predict: a hub id or a local directory, e.g. the
    # tokenizer/ folder written by fastplus-train-tokenizer. Fit it on the policy's action normalisation (QUANTILES)
    # and, with use_relative_actions, on relative chunks. A checkpoint keeps its own copy.
    fast_tokenizer_path: str = "physical-intelligence/fast"
    # Steps per FAST sub-chunk (the FAST tokenizer's time horizon); a chunk of chunk_size steps is encoded as
    # BOS, sub-chunk, SPLIT, sub-chunk, ..., EOS. Unset (None): 10 steps, or chunk_size when the chunk is shorter.
    split_every: int | None = None
    # Most FAST tokens of one chunk in training (BOS, SPLITs and EOS included). A sample of the dataset's chunks is
    # checked against it when the policy is built; sub-chunks beyond it are left out of the targets.
    max_action_tokens: int = 256
    # Vocabulary id of the action sequence's BOS: one of PaliGemma's <seg> ids (257024..257151).
    action_bos_token_id: int = SEG_IDS[0]
    # Vocabulary id of SPLIT, the separator between sub-chunks: one of PaliGemma's <seg> ids (257024..257151).
    action_split_token_id: int = SEG_IDS[1]
    # Vocabulary id of EOS, which ends the action sequence and pads a batch: one of PaliGemma's <seg> ids.
    action_eos_token_id: int = SEG_IDS[2]
    # Weight of the FAST-token cross-entropy, the loss that trains the backbone (Knowledge Insulation: 1; 0 trains
    # the action expert alone).
    fast_loss_weight: float = 1.0
    # Weight of the flow-matching MSE, which trains the action expert only: the expert reads the backbone through a
    # stop-gradient (Knowledge Insulation: 1).
    flow_loss_weight: float = 1.0
    # Normalisation of the FAST cross-entropy: "action" over the action ids only (FAST ids, SPLIT, EOS: what the
    # decoder may emit), "full" over the whole 257,152-id vocabulary.
    fast_ce_vocabulary: str = "action"
    # How the policy acts: "flow" (pi05's flow sampling; works with RTC) or "fast" (autoregressive decoding from the
    # backbone's FAST head under the exact grammar, for comparison; not with RTC).
    action_decoding: str = "flow"
    # With action_decoding="fast" (or report_disagreement): sampling temperature of the FAST head, 0 is greedy.
    fast_decoding_temperature: float = 0.0
    # With action_decoding="fast" (or report_disagreement): most tokens generated per chunk. Unset (None): the exact
    # grammar's bound, the longest sequence the layout allows; a smaller value is refused when the policy is built.
    max_decoding_steps: int | None = None
    # With action_decoding="flow": scale of the Gaussian noise the flow sampler starts from at run time (training is
    # unchanged). 1.0 samples the learned action distribution, as pi05 does; 0.0 starts every chunk from zero noise,
    # so the same observation always gives the same chunk (no sample-to-sample jitter). In the SO-101 simulator 0.0
    # raised reach-and-close success of policies without expert_state_token by 0.10-0.32 (docs/so101_sim.md).
    flow_noise_scale: float = 1.0
    # Opt-in: at every chunk also decode the other way (flow and the FAST head) and report their disagreement, the
    # normalised MSE between the two chunks over the executed steps, in ``policy.last_disagreement`` and the log. On
    # held-out so101_record_test chunks it ranks the flow chunk's error (docs/learning_study.md); it costs one FAST
    # decode per chunk.
    report_disagreement: bool = False
    # Weights that initialise a new policy: a pi05 or pi05_ki checkpoint (hub id such as lerobot/pi05_base, or a
    # local pretrained_model directory), loaded strictly. Unlike --policy.pretrained_path, the policy keeps its own
    # processors with the FAST step. None: random initialisation.
    init_from: str | None = None
    # Start the 256 state-bin tokens of the prompt ("State: 12 250 ...") from ordinal embeddings (neighbouring bins
    # close) instead of random ones. Only for a backbone trained from scratch with a word-level text tokenizer that
    # has one token per bin (the offline stand-in); not with init_from.
    ordinal_state_embeddings: bool = False
    # Also give the action expert the normalised state (clipped to [-1, 1], the range the prompt's bins cover) as one
    # continuous token before the noisy actions, through a linear projection, as pi0 does. pi05 writes the state only
    # as 256-bin text tokens in the prompt, whose meaning a backbone trained from scratch must learn first. Adds
    # parameters that pi05 checkpoints lack: for policies trained from scratch, not with init_from.
    expert_state_token: bool = False
    # Temporal ensembling at run time (ACT's): predict a chunk at every step and act with the exponentially weighted
    # average of every chunk's prediction for that step (weights exp(-coeff * age), 0.01 in ACT; older predictions
    # weigh more for a positive coeff). Smooths flow sampling's step-to-step noise at one chunk per step; needs
    # n_action_steps=1 and no RTC. None: act from a queue of n_action_steps actions per chunk, as pi05.
    temporal_ensemble_coeff: float | None = None

    def __post_init__(self) -> None:
        # PI05Config.__post_init__ accepts only the two published variants; its other checks are repeated here.
        PreTrainedConfig.__post_init__(self)
        if self.n_action_steps > self.chunk_size:
            raise ValueError(
                f"n_action_steps ({self.n_action_steps}) cannot be greater than chunk_size ({self.chunk_size})."
            )
        if self.dtype not in ("bfloat16", "float32"):
            raise ValueError(f"dtype must be 'bfloat16' or 'float32', got {self.dtype!r}.")
        if self.ordinal_state_embeddings and self.init_from:
            raise ValueError(
                "ordinal_state_embeddings sets the starting embeddings of a backbone trained from scratch; "
                "drop it or init_from (a pretrained backbone already has its number embeddings)."
            )
        if self.expert_state_token and self.init_from:
            raise ValueError(
                "expert_state_token adds a state projection that pi05 checkpoints lack; drop it or init_from (a "
                "pretrained backbone reads the state from the prompt)."
            )
        self._validate_variants()
        self._validate_action_tokens()
        self._validate_training_and_decoding()

    @property
    def n_subchunks(self) -> int:
        return -(-self.chunk_size // self.split_every)

    def validate_features(self) -> None:
        """Refuse a dataset without ``action`` before pi05 adds its defaults (``empty_cameras`` blank camera features,
        padded state). A dataset without camera is fine: the prefix is then the prompt alone (``StateOnlyCameras``)."""
        require_action_feature(self, "pi05_ki")
        super().validate_features()

    def load_fast_tokenizer(self, tokenizer: FastTokenizer | None = None) -> FastTokenizer:
        """The FAST tokenizer of a new policy (``fast_tokenizer_path``) or the given one (a checkpoint's copy),
        checked against the action feature and, for a new policy, against ``split_every``."""
        return policy_fast_tokenizer(
            self, self.fast_tokenizer_path, "--policy.fast_tokenizer_path", tokenizer, self.split_every
        )

    def locate_init_weights(self) -> Path:
        """``model.safetensors`` of ``init_from``, checked before a policy builds its model."""
        return locate_init_weights(self.init_from, INIT_WEIGHTS)

    @property
    def action_special_ids(self) -> tuple[int, int, int]:
        return self.action_bos_token_id, self.action_split_token_id, self.action_eos_token_id

    def _validate_variants(self) -> None:
        for name in ("paligemma_variant", "action_expert_variant"):
            if getattr(self, name) not in GEMMA_VARIANTS:
                raise ValueError(f"{name}={getattr(self, name)!r} is unknown; use one of {sorted(GEMMA_VARIANTS)}.")
        backbone, expert = GEMMA_VARIANTS[self.paligemma_variant], GEMMA_VARIANTS[self.action_expert_variant]
        shape = ("depth", "num_heads", "head_dim")
        if [getattr(backbone, k) for k in shape] != [getattr(expert, k) for k in shape]:
            raise ValueError(
                f"paligemma_variant={self.paligemma_variant!r} and "
                f"action_expert_variant={self.action_expert_variant!r} cannot share attention (they need equal "
                "depth, head count and head size): use gemma_2b with gemma_300m, or gemma_tiny for both."
            )

    def _validate_action_tokens(self) -> None:
        self.split_every = resolve_split_every(self.split_every, self.chunk_size)
        if not 0 < self.split_every <= self.chunk_size:
            raise ValueError(
                f"split_every={self.split_every} must be in [1, chunk_size={self.chunk_size}]: it is the number of "
                "steps per FAST sub-chunk (e.g. the FAST tokenizer's time horizon, 10 by default)."
            )
        shortest = 1 + 2 * self.n_subchunks  # BOS, then one token and one SPLIT/EOS per sub-chunk
        if self.max_action_tokens < shortest:
            raise ValueError(
                f"max_action_tokens={self.max_action_tokens} cannot hold even the shortest layout of "
                f"{self.n_subchunks} sub-chunks ({shortest} tokens); raise it (256 fits most data) or raise "
                "split_every."
            )
        names = ("action_bos_token_id", "action_split_token_id", "action_eos_token_id")
        for name, value in zip(names, self.action_special_ids, strict=True):
            if value not in SEG_IDS:
                raise ValueError(
                    f"{name}={value} is not a PaliGemma <seg> id ({SEG_IDS[0]}..{SEG_IDS[-1]}): FAST tokens use "
                    f"the ids from {FAST_ID_BASE} downwards and text the ids below, so the layout's BOS/SPLIT/EOS "
                    f"must be <seg> ids. The defaults {SEG_IDS[0]}, {SEG_IDS[1]}, {SEG_IDS[2]} work."
                )
        if len(set(self.action_special_ids)) != 3:
            raise ValueError(f"{', '.join(names)} must be three different ids; got {self.action_special_ids}.")
        if not self.fast_tokenizer_path:
            raise ValueError(
                "fast_tokenizer_path is empty: set it to a FAST tokenizer directory (fastplus-train-tokenizer writes "
                "one) or hub id (physical-intelligence/fast)."
            )
        check_fast_tokenizer_path_when_parsed(self, self.fast_tokenizer_path, "--policy.fast_tokenizer_path")

    def _validate_training_and_decoding(self) -> None:
        if self.fast_loss_weight < 0 or self.flow_loss_weight < 0 or self.fast_loss_weight + self.flow_loss_weight == 0:
            raise ValueError(
                f"fast_loss_weight={self.fast_loss_weight} and flow_loss_weight={self.flow_loss_weight} must be "
                "non-negative and not both zero (Knowledge Insulation uses 1 and 1)."
            )
        if self.train_expert_only and self.fast_loss_weight > 0:
            raise ValueError(
                f"train_expert_only=True freezes the backbone, so the FAST cross-entropy (fast_loss_weight="
                f"{self.fast_loss_weight}) would train nothing. Knowledge Insulation trains the backbone with it: set "
                "--policy.train_expert_only=false, or --policy.fast_loss_weight=0 to train the action expert alone."
            )
        if self.fast_ce_vocabulary not in CE_VOCABULARIES:
            raise ValueError(f"fast_ce_vocabulary={self.fast_ce_vocabulary!r}; use one of {CE_VOCABULARIES}.")
        if self.action_decoding not in ACTION_DECODINGS:
            raise ValueError(f"action_decoding={self.action_decoding!r}; use one of {ACTION_DECODINGS}.")
        if self.fast_decoding_temperature < 0:
            raise ValueError(
                f"fast_decoding_temperature must be >= 0 (0 is greedy), got {self.fast_decoding_temperature}."
            )
        if self.flow_noise_scale < 0:
            raise ValueError(
                f"flow_noise_scale must be >= 0 (1: pi05's sampling, 0: deterministic), got {self.flow_noise_scale}."
            )
        if self.max_decoding_steps is not None and self.max_decoding_steps < 1:
            raise ValueError(
                f"max_decoding_steps must be positive (or unset: the exact grammar's bound), got "
                f"{self.max_decoding_steps}."
            )
        if self.action_decoding == "fast" and self.rtc_config is not None and self.rtc_config.enabled:
            raise ValueError(FAST_DECODING_RTC_REFUSAL)
        if self.temporal_ensemble_coeff is not None and self.n_action_steps != 1:
            raise ValueError(
                f"temporal_ensemble_coeff predicts a chunk at every step: set --policy.n_action_steps=1 "
                f"(got {self.n_action_steps}), or leave temporal_ensemble_coeff unset."
            )
        if self.temporal_ensemble_coeff is not None and self.rtc_config is not None and self.rtc_config.enabled:
            raise ValueError("temporal_ensemble_coeff and RTC both blend chunks; use one (RTC: --inference.type=rtc).")


show_config_errors_on_the_cli()
