"""The plugin's pi0_fast: LeRobot's pi0-FAST model, with the pieces users hit problems with replaced.

Same parameters and state-dict keys as core ``PI0FastPolicy`` (core checkpoints load, strictly). Changes:

* Sequence ``[images, prompt | action tokens]``: image and prompt tokens attend bidirectionally, action tokens
  causally. With the split layout the prompt ends in ``Action: `` and the action tokens are
  ``BOS, sub-chunk tokens, SPLIT, ..., EOS`` with dedicated ids; core checkpoints keep their own layout.
* Loss only where there are targets: hidden states of the positions that predict a target token are gathered
  *before* the LM head, which then scores only the candidates (FAST ids, SPLIT, EOS). With the split layout the
  head is the input embedding (tied, as in PaliGemma), so core's untied ``lm_head`` gets no gradient. Core's layout
  is trained through core's ``lm_head`` over the full vocabulary, as core trained it, but also only at target
  positions.
* Exact-grammar decoding (KV cache or not, greedy or sampled): at each step only the candidates that keep the
  sequence decodable are scored (a slice of the LM head) and chosen (``fast.layout_grammar``): every chunk comes out
  complete, with every coefficient inside the FAST tokenizer's range; each row stops at EOS and the batch when all
  rows are done. The horizon is ``chunk_size``; ``last_decode`` reports what was decoded.
* No hub access in ``__init__`` for the split layout (the FAST tokenizer may be a local directory and is saved
  inside each checkpoint), any image size, the ``gemma_tiny`` variant, state-only datasets (no camera).
"""

from __future__ import annotations

import builtins
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Unpack

import numpy as np
import torch
import torch.nn.functional as F
from lerobot.configs import PreTrainedConfig
from lerobot.lerobot_types import TransitionKey
from lerobot.policies.common.vla_utils import make_att_2d_masks, prepare_attention_masks_4d
from lerobot.policies.pi0_fast.modeling_pi0_fast import ActionSelectKwargs, PI0FastPaliGemma, PI0FastPytorch
from lerobot.policies.pi0_fast.modeling_pi0_fast import PI0FastPolicy as CorePI0FastPolicy
from lerobot.policies.pi_gemma import PaliGemmaForConditionalGenerationWithPiGemma
from lerobot.policies.pretrained import PreTrainedPolicy
from lerobot.processor.converters import create_transition
from lerobot.utils.constants import (
    ACTION,
    ACTION_TOKEN_MASK,
    ACTION_TOKENS,
    OBS_LANGUAGE_ATTENTION_MASK,
    OBS_LANGUAGE_TOKENS,
)
from lerobot.utils.import_utils import require_package
from torch import Tensor, nn
from transformers import AutoTokenizer

from lerobot_fastplus.fast.split_layout import SplitLayout
from lerobot_fastplus.fast.tokenizer import FastTokenizer
from lerobot_fastplus.fast_action_step import (
    ACTION_IS_PAD_KEY,
    ACTION_TOKEN_TARGET_KEY,
    ACTION_TOKEN_VALID_KEY,
    ACTION_TOKENS_KEY,
    FastActionTokenizerStep,
)
from lerobot_fastplus.policies.common.backbone import paligemma_hf_config
from lerobot_fastplus.policies.common.cameras import StateOnlyCameras
from lerobot_fastplus.policies.common.checkpoint import (
    FAST_TOKENIZER_DIR,
    checkpoint_fast_tokenizer_dir,
    load_strictly,
    read_header,
)
from lerobot_fastplus.policies.common.construction import build_dtype, parameters_on_meta, require_materialized
from lerobot_fastplus.policies.common.decoding import (
    DecodeReport,
    ExactGrammar,
    actions_from_candidates,
    build_decoding_grammar,
    cached_language_model_step,
    decode_constrained,
    resolve_decoding_limit,
)
from lerobot_fastplus.policies.common.state_saturation import warn_if_state_saturates
from lerobot_fastplus.policies.common.token_budget import check_token_budget
from lerobot_fastplus.policies.pi0_fast.configuration_pi0_fast import RTC_REFUSAL, PI0FastConfig
from lerobot_fastplus.policies.pi05_ki.modeling_pi05_ki import compute_layer_ki

logger = logging.getLogger(__name__)

LM_HEAD_KEY = "model.paligemma_with_expert.paligemma.lm_head.weight"
EMBED_KEY = "model.paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight"


@dataclass(frozen=True)
class ActionVocabulary:
    """Vocabulary ids of the layout's local ids (FAST ``0..n-1``, BOS, SPLIT, EOS) and the ids that open the
    action sequence (fed after the prompt before decoding starts)."""

    local_to_vocab: Tensor
    start_ids: Tensor

    @property
    def n_fast(self) -> int:
        return self.local_to_vocab.shape[0] - 3

    @property
    def candidates(self) -> Tensor:
        """Vocabulary ids the decoder scores: FAST ids, SPLIT, EOS."""
        n = self.n_fast
        return torch.cat([self.local_to_vocab[:n], self.local_to_vocab[n + 1 :]])


class FastPlusPaliGemma(PI0FastPaliGemma):
    """Core pi0_fast's PaliGemma, built from a variant name (``gemma_tiny`` allowed) at the configured image size."""

    def __init__(self, config: PI0FastConfig) -> None:
        nn.Module.__init__(self)  # the parent hard-codes the published SigLIP and ignores image_resolution
        with build_dtype(config.dtype):  # created in the target dtype (SigLIP in fp32), not all in fp32 and then cast
            size = config.image_resolution[0]
            hf_config = paligemma_hf_config(config.paligemma_variant, size, text_dtype=config.dtype)
            self.paligemma = PaliGemmaForConditionalGenerationWithPiGemma(config=hf_config)
        self.to_bfloat16_for_selected_params(config.dtype)


class FastPlusPI0FastPytorch(PI0FastPytorch):
    """Core pi0_fast's model with target-only loss and constrained decoding over an :class:`ActionVocabulary`."""

    def __init__(self, config: PI0FastConfig, vocab: ActionVocabulary, *, empty_weights: bool = False) -> None:
        """``empty_weights``: parameters on the meta device, for a checkpoint to fill (``common.construction``)."""
        nn.Module.__init__(self)  # the parent only knows the published variants
        if config.image_resolution[0] != config.image_resolution[1]:
            raise ValueError(f"PaliGemma needs square images; image_resolution={config.image_resolution}.")
        self.config = config
        self.rtc_processor = None
        self._paligemma_tokenizer = None
        with parameters_on_meta(empty_weights):
            self.paligemma_with_expert = FastPlusPaliGemma(config)
        if config.action_head == "embedding":  # the head is the tied input embedding: no loss reaches lm_head
            self.paligemma_with_expert.paligemma.lm_head.weight.requires_grad_(False)
        self.gradient_checkpointing_enabled = False
        # non-persistent: the state dict stays exactly core pi0_fast's
        self.register_buffer("local_to_vocab", vocab.local_to_vocab.clone(), persistent=False)
        self.register_buffer("candidate_vocab", vocab.candidates.clone(), persistent=False)
        self.register_buffer("start_ids", vocab.start_ids.clone(), persistent=False)
        if config.compile_model:
            torch.set_float32_matmul_precision("high")
            self.forward = torch.compile(self.forward, mode=config.compile_mode)

    @property
    def n_fast(self) -> int:
        return self.local_to_vocab.shape[0] - 3

    def _embed_dtype(self) -> torch.dtype:
        return self.paligemma_with_expert.paligemma.model.language_model.layers[0].self_attn.q_proj.weight.dtype

    def embed_sequence(
        self, images: list[Tensor], img_masks: list[Tensor], tokens: Tensor, masks: Tensor, action_ids: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Embeddings, pad mask and autoregressive mask of ``[images, prompt | action_ids]`` (vocabulary ids).
        Images are optional (state-only datasets)."""
        embs, pad = [], []
        for img, img_mask in zip(images, img_masks, strict=True):
            img_emb = self._apply_checkpoint(self.paligemma_with_expert.embed_image, img)
            embs.append(img_emb)
            pad.append(img_mask[:, None].expand(img_emb.shape[:2]))
        ids = torch.cat([tokens, action_ids], dim=1)
        embs.append(self._apply_checkpoint(self.paligemma_with_expert.embed_language_tokens, ids))
        pad.append(torch.cat([masks.bool(), torch.ones_like(action_ids, dtype=torch.bool)], dim=1))
        embs_t, pad_t = torch.cat(embs, dim=1).to(self._embed_dtype()), torch.cat(pad, dim=1)
        ar = torch.zeros_like(pad_t, dtype=torch.long)
        ar[:, pad_t.shape[1] - action_ids.shape[1] :] = 1  # action tokens: causal; image + prompt: one block
        return embs_t, pad_t, ar

    def _backbone(
        self, embs: Tensor, attention_2d: Tensor, position_ids: Tensor, cache: Any = None, use_cache: bool = False
    ) -> tuple[Tensor, Any]:
        (hidden, _), cache = self.paligemma_with_expert.forward(
            attention_mask=prepare_attention_masks_4d(attention_2d, dtype=embs.dtype),
            position_ids=position_ids,
            past_key_values=cache,
            inputs_embeds=[embs, None],
            use_cache=use_cache,
            adarms_cond=[None, None],
        )
        return hidden, cache

    def action_hidden(
        self,
        images: list[Tensor],
        img_masks: list[Tensor],
        tokens: Tensor,
        masks: Tensor,
        action_ids: Tensor,
        action_valid: Tensor,
    ) -> Tensor:
        """Final hidden states ``[B, L, width]`` of the action tokens (teacher forcing).

        The layers are pi05_ki's (``compute_layer_ki`` on the backbone alone), the same computation as the language
        model's forward over the joint sequence minus what the mask or the loss discards: image/prompt queries attend
        to image/prompt keys only, and in the last layer only the action tokens get queries and outputs."""
        embs, pad, ar = self.embed_sequence(images, img_masks, tokens, masks, action_ids)
        pad[:, -action_ids.shape[1] :] = action_valid.bool()
        mask = prepare_attention_masks_4d(make_att_2d_masks(pad, ar), dtype=embs.dtype)
        positions = torch.cumsum(pad, dim=1) - 1
        language_model = self.paligemma_with_expert.paligemma.model.language_model
        hidden = [embs]
        for depth, layer in enumerate(language_model.layers, start=1):
            last = depth == len(language_model.layers)
            hidden = self._apply_checkpoint(
                compute_layer_ki, hidden, mask, positions, [None], (layer,), language_model.rotary_emb,
                n_fast=action_ids.shape[1], fast_outputs_only=last,
            )  # fmt: skip
        return language_model.norm(hidden[0])[0]

    def lm_head_weight(self) -> Tensor:
        """The output head (``config.action_head``). "embedding": the input embedding, tied as in PaliGemma, openpi's
        pi0-FAST and pi05_ki; the loss reads only its ~1k action rows, where a separate trained head would put a
        second vocabulary-sized tensor through every optimizer step. "lm_head": core's untied copy, as core trained
        it."""
        paligemma = self.paligemma_with_expert.paligemma
        if self.config.action_head == "lm_head":
            return paligemma.lm_head.weight
        return paligemma.model.language_model.embed_tokens.weight

    def forward(
        self,
        images: list[Tensor],
        img_masks: list[Tensor],
        tokens: Tensor,
        masks: Tensor,
        action_ids: Tensor,
        action_valid: Tensor,
        target: Tensor,
        labels: Tensor,
        full_vocabulary: bool,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Per target token: cross-entropy, whether the argmax was right, batch row.

        Position ``i`` predicts token ``i + 1`` where ``target[:, i + 1]``; ``labels`` holds candidate indices
        (or vocabulary ids with ``full_vocabulary``). Only those positions reach the LM head.
        """
        hidden = self.action_hidden(images, img_masks, tokens, masks, action_ids, action_valid)
        predicted = target[:, 1:].bool()
        selected = hidden[:, :-1][predicted].float()
        head = self.lm_head_weight()
        # candidate rows of the tied head get a sparse gradient, which autograd adds into the dense gradient of the
        # embedding lookup instead of allocating a second dense [vocabulary, width] one (an untied lm_head gets a
        # dense one: AdamW takes no sparse gradient)
        tied = self.config.action_head == "embedding"
        weight = head if full_vocabulary else F.embedding(self.candidate_vocab, head, sparse=tied)
        logits = selected @ weight.float().T
        y = labels[:, 1:][predicted]
        ce = F.cross_entropy(logits, y, reduction="none")
        return ce, logits.argmax(dim=-1) == y, predicted.nonzero()[:, 0]

    @torch.no_grad()
    def generate(
        self,
        images: list[Tensor],
        img_masks: list[Tensor],
        tokens: Tensor,
        masks: Tensor,
        grammar: ExactGrammar,
        *,
        max_steps: int | None = None,
        temperature: float = 0.0,
        use_kv_cache: bool = True,
        generator: torch.Generator | None = None,
        forced: Tensor | None = None,
    ) -> Tensor:
        """Constrained decoding: candidate indices ``[B, <= grammar.max_length]`` (FAST ``0..n-1``, SPLIT ``n``, EOS
        ``n + 1``), EOS-padded once a row is done; stops early when every row is done (``decode_constrained``).

        ``forced`` (``[B, P]`` candidate indices, left-padded with -1): tokens that follow BOS as given, fed with the
        prompt in the same forward pass (teacher forcing); the result holds only the tokens generated after them."""
        batch = tokens.shape[0]
        start = self.start_ids[None].expand(batch, -1)
        state = grammar.start(batch)
        if forced is not None:
            state = grammar.follow(state, forced)
            start = torch.cat([start, self.candidate_vocab[forced.clamp(min=0)]], dim=1)
        embs, pad, ar = self.embed_sequence(images, img_masks, tokens, masks, start)
        if forced is not None:
            pad[:, -forced.shape[1] :] = forced >= 0  # the padding is masked out (keys, queries and positions)
        weight = self.lm_head_weight()[self.candidate_vocab].float()  # only the ids that can come next
        hidden, cache = self._backbone(
            embs, make_att_2d_masks(pad, ar), torch.cumsum(pad, dim=1) - 1, use_cache=use_kv_cache
        )
        language_model = self.paligemma_with_expert.paligemma.model.language_model
        if use_kv_cache:
            keys = [layer.keys for layer in cache.layers]
            values = [layer.values for layer in cache.layers]

        def step(chosen: Tensor) -> Tensor:
            nonlocal embs, pad, ar
            new_emb = self.paligemma_with_expert.embed_language_tokens(self.candidate_vocab[chosen][:, None])
            new_emb = new_emb.to(embs.dtype)
            pad = torch.cat([pad, torch.ones_like(pad[:, :1])], dim=1)
            if use_kv_cache:
                return cached_language_model_step(language_model, new_emb, pad, keys, values)
            embs = torch.cat([embs, new_emb], dim=1)
            ar = torch.cat([ar, torch.ones_like(ar[:, :1])], dim=1)
            out, _ = self._backbone(embs, make_att_2d_masks(pad, ar), torch.cumsum(pad, dim=1) - 1)
            return out[:, -1]

        return decode_constrained(
            hidden[:, -1],
            step,
            weight,
            grammar,
            max_steps=max_steps,
            temperature=temperature,
            generator=generator,
            state=state,
        )


class PI0FastPolicy(StateOnlyCameras, CorePI0FastPolicy):
    """pi0-FAST with split tokens, constrained decoding and honest failures; replaces LeRobot's ``pi0_fast``."""

    config_class = PI0FastConfig
    name = "pi0_fast"

    def __init__(
        self,
        config: PI0FastConfig,
        *,
        fast_tokenizer: FastTokenizer | None = None,
        weights_from: str | Path | None = None,
        hub_kwargs: dict[str, Any] | None = None,
        dataset_stats: dict[str, dict[str, Any]] | None = None,
        **kwargs: Any,
    ) -> None:
        """``fast_tokenizer`` overrides ``config.action_tokenizer_name`` (``from_pretrained`` passes the copy saved in
        the checkpoint). The weights come from ``weights_from`` (a checkpoint directory or hub id, fetched with
        ``hub_kwargs``; ``from_pretrained`` passes the checkpoint it loads), else from ``config.init_from``, else they
        are random; a checkpoint is streamed into an empty model, never held twice. A new policy checks its state
        normalisation against ``dataset_stats`` (``make_policy`` passes the dataset's)."""
        require_package("transformers", extra="pi")
        PreTrainedPolicy.__init__(self, config)  # the core __init__ loads both tokenizers from the hub
        if not isinstance(config, PI0FastConfig):
            raise ValueError(f"{type(self).__name__} needs the plugin's PI0FastConfig, got {type(config).__name__}.")
        config.validate_features()
        if weights_from is None:
            warn_if_state_saturates(config, dataset_stats, "pi0_fast")
            if config.init_from:
                config.locate_init_weights()  # a wrong path fails before the model is built
                weights_from = config.init_from
        if config.action_layout is None:
            config.action_layout = "split"
            config.validate_layout()
        if config.action_head is None:
            config.action_head = "lm_head" if config.action_layout == "core" else "embedding"
        self.config = config
        self.fast_tokenizer = config.load_fast_tokenizer(fast_tokenizer)  # checked against the dataset's action
        core = config.action_layout == "core"
        split_every = config.chunk_size if core else config.split_every  # core's layout: one FAST chunk
        self.layout = SplitLayout(self.fast_tokenizer, config.chunk_size, split_every)
        n_fast = self.layout.n_fast_ids
        if n_fast > config.fast_id_base + 1:
            raise ValueError(
                f"the FAST tokenizer has {n_fast} ids, more than the {config.fast_id_base + 1} vocabulary ids they map "
                "onto; fit one with a smaller vocab_size (1024 or 2048 are usual)."
            )
        if not core:  # core's layout is tokenized by core's processor step
            check_token_budget(config, self.layout, kwargs.get("dataset_meta"))  # before the first training step
        self.grammar, self.max_decoding_steps = self._decoding_grammar()
        fast_vocab = config.fast_id_base - torch.arange(n_fast)
        bos, split, eos = config.action_special_ids
        start = [bos]
        if core:
            bos, eos, start = self._core_layout_ids()
        vocab = ActionVocabulary(torch.cat([fast_vocab, torch.tensor([bos, split, eos])]), torch.tensor(start))
        self.rtc_processor = None
        self.init_rtc_processor()
        self.model = FastPlusPI0FastPytorch(config, vocab, empty_weights=weights_from is not None)
        if config.gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
        if weights_from is not None:
            self.load_weights(weights_from, **(hub_kwargs or {}))
        self.model.to(config.device)
        require_materialized(self, "pi0_fast")
        self._fallback_step: FastActionTokenizerStep | None = None
        self.last_decode: DecodeReport | None = None
        self.reset()

    def _decoding_grammar(self) -> tuple[ExactGrammar, int]:
        """The exact grammar of the layout and the decode's step limit (``max_decoding_steps``, by default the
        grammar's bound). A core checkpoint's limit (core's default 256) was a budget for grammar-less decoding: when
        it is below the bound, the bound is used instead, with a note."""
        action_dim, requested = self.config.output_features[ACTION].shape[0], self.config.max_decoding_steps
        grammar, limit = build_decoding_grammar(self.layout, action_dim, None, self.config.device)
        if self.config.action_layout == "core" and requested is not None and requested < limit:
            logger.warning(
                "pi0_fast: max_decoding_steps=%d (core checkpoint) is below the exact grammar's bound of %d tokens "
                "for this chunk; decoding up to %d so that every chunk completes.",
                requested,
                limit,
                limit,
            )
            return grammar, limit
        return grammar, resolve_decoding_limit(requested, grammar.tables, "--policy.max_decoding_steps")

    def _core_layout_ids(self) -> tuple[int, int, list[int]]:
        """Core pi0_fast's text BOS, end-of-action ``|`` and opening ``<bos> Action: `` ids (text tokenizer)."""
        text = AutoTokenizer.from_pretrained(self.config.text_tokenizer_name)
        prefix = text.encode("Action: ", add_special_tokens=False)
        end = text.encode("|", add_special_tokens=False)
        if len(end) != 1 or text.bos_token_id is None:
            raise ValueError(
                f"text tokenizer {self.config.text_tokenizer_name} cannot express core pi0_fast's layout ('|' must be "
                "one token and a BOS must exist); use the PaliGemma tokenizer the checkpoint was trained with."
            )
        return text.bos_token_id, end[0], [text.bos_token_id, *prefix]

    def supports_rtc(self) -> bool:
        """Split layout: yes, as prefix conditioning (``predict_action_chunk``). Core layout: no; only
        ``lerobot-rollout --inference.type=rtc`` asks, before ``init_rtc_processor``, and its own error gives no
        reason, so the reason is logged here."""
        if self.config.action_layout == "core":
            logger.error(RTC_REFUSAL)
            return False
        return True

    def init_rtc_processor(self) -> None:
        """No RTC processor: prefix conditioning happens inside the decode. ``lerobot-rollout --inference.type=rtc``
        sets ``rtc_config`` on the built policy and calls this; the core layout is refused here."""
        self.rtc_processor = None
        if self.config.rtc_config is None:
            return
        if self.config.action_layout == "core":
            raise ValueError(RTC_REFUSAL)
        if self.layout.n_subchunks == 1:
            logger.warning(
                "pi0_fast: split_every=%d equals chunk_size, so a chunk is one sub-chunk and RTC has no whole "
                "sub-chunk to force without forcing the entire chunk; chunks are decoded as without RTC (train with "
                "split_every < chunk_size for prefix conditioning).",
                self.config.split_every,
            )

    def reset(self) -> None:
        super().reset()
        self._previous_action: np.ndarray | None = None

    # ------------------------------------------------------------------ weights
    @classmethod
    def from_pretrained(
        cls: builtins.type[PI0FastPolicy],
        pretrained_name_or_path: str | Path,
        *,
        config: PreTrainedConfig | None = None,
        force_download: bool = False,
        resume_download: bool | None = None,
        proxies: dict | None = None,
        token: str | bool | None = None,
        cache_dir: str | Path | None = None,
        local_files_only: bool = False,
        revision: str | None = None,
        strict: bool = True,
        **kwargs: Any,
    ) -> PI0FastPolicy:
        """Load a pi0_fast checkpoint (this plugin's or core LeRobot's), strictly; raises on any mismatch.

        A checkpoint whose config names no ``action_layout`` was written by core pi0_fast and is decoded with
        core's layout (``<bos> Action: <FAST tokens> |``), the way it was trained; an ``rtc_config`` in it is dropped
        with a warning (core pi0_fast never ran RTC).
        """
        if not strict:
            raise ValueError("pi0_fast always loads strictly (a partial load would silently keep random weights).")
        hub = dict(
            force_download=force_download,
            proxies=proxies,
            token=token,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            revision=revision,
        )
        if config is None:
            config = PreTrainedConfig.from_pretrained(pretrained_name_or_path, resume_download=resume_download, **hub)
        if not isinstance(config, PI0FastConfig):
            raise ValueError(
                f"{pretrained_name_or_path} holds a {type(config).__name__} ('{config.type}'), not a pi0_fast config."
            )
        if config.action_layout is None and config.rtc_config is not None:
            logger.warning(
                "pi0_fast: %s names an rtc_config, which core pi0_fast never used; loading it without RTC (%s)",
                pretrained_name_or_path,
                RTC_REFUSAL,
            )
            config.rtc_config = None
        if config.action_head is None:  # written by core, or by this plugin before the head was tied
            config.action_head = "lm_head"
        if config.action_layout is None:
            config.action_layout = "core"
            logger.info(
                "pi0_fast: %s was trained by LeRobot's core pi0_fast (its config names no action_layout); decoding "
                "it with core's token layout.",
                pretrained_name_or_path,
            )
        fast_dir = checkpoint_fast_tokenizer_dir(pretrained_name_or_path, **hub)
        fast = FastTokenizer.load(fast_dir) if fast_dir is not None else None
        policy = cls(config, fast_tokenizer=fast, weights_from=pretrained_name_or_path, hub_kwargs=hub, **kwargs)
        policy.eval()
        return policy

    def load_weights(self, pretrained_name_or_path: str | Path, **hub_kwargs: Any) -> None:
        """Load ``model.safetensors`` (local directory or hub id) strictly, streamed into the model (parameters still
        on the meta device are allocated on ``config.device``); ``ValueError`` names every missing, unexpected or
        wrongly shaped tensor before any weight is read. Accepts core's key variants (no ``model.`` prefix, no input
        embedding: it is then copied from the LM head, as core does)."""
        path, raw = read_header(pretrained_name_or_path, "pi0_fast", **hub_kwargs)
        state = {key if key.startswith("model.") else f"model.{key}": value for key, value in raw.items()}
        if EMBED_KEY not in state and LM_HEAD_KEY in state:
            state[EMBED_KEY] = state[LM_HEAD_KEY].clone()
        hint = "Set paligemma_variant and image_resolution to the checkpoint's."
        model = f"pi0_fast model ({self.config.paligemma_variant}, image {self.config.image_resolution[0]}px)"
        load_strictly(self, state, path, model, hint, device=self.config.device)
        logger.info("pi0_fast: loaded all %d tensors from %s", len(state), path)

    def _save_pretrained(self, save_directory: Path, state_dict: dict[str, Tensor] | None = None) -> None:
        super()._save_pretrained(save_directory, state_dict=state_dict)
        self.fast_tokenizer.save(Path(save_directory) / FAST_TOKENIZER_DIR)

    # ------------------------------------------------------------------ training
    def _split_targets(self, batch: dict[str, Any], device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        """Layout ids, valid and target masks: from the FAST processor step, or tokenized here when the batch came
        through processors without it (e.g. a core checkpoint's, fine-tuned with action_layout='split')."""
        if ACTION_TOKENS_KEY not in batch:
            if self._fallback_step is None:
                logger.info(
                    "pi0_fast: the batch has no %s (its preprocessor lacks the FAST step); tokenizing the normalised "
                    "actions in the policy instead.",
                    ACTION_TOKENS_KEY,
                )
                self._fallback_step = FastActionTokenizerStep(
                    tokenizer=self.fast_tokenizer.to_dict(),
                    chunk_size=self.config.chunk_size,
                    split_every=self.config.split_every,
                    max_tokens=self.config.max_action_tokens,
                )
            pad = {ACTION_IS_PAD_KEY: batch[ACTION_IS_PAD_KEY]} if ACTION_IS_PAD_KEY in batch else {}
            out = self._fallback_step(create_transition(action=batch[ACTION], complementary_data=pad))
            batch = out[TransitionKey.COMPLEMENTARY_DATA]
        return tuple(
            batch[key].to(device) for key in (ACTION_TOKENS_KEY, ACTION_TOKEN_VALID_KEY, ACTION_TOKEN_TARGET_KEY)
        )

    def _action_sequence(self, batch: dict[str, Any], device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Vocabulary ids, valid mask, target mask and labels (candidate indices, or vocabulary ids in core's
        layout) of the target action sequences, cut to the longest real sequence of the batch."""
        if self.config.action_layout == "core":
            if ACTION_TOKENS not in batch or ACTION_TOKEN_MASK not in batch:
                raise ValueError(
                    f"pi0_fast with action_layout='core' trains on core's {ACTION_TOKENS} / {ACTION_TOKEN_MASK} (from "
                    "core's ActionTokenizerProcessorStep, in a core checkpoint's preprocessor); the batch has neither. "
                    "Use action_layout='split' with this plugin's processors."
                )
            ids, valid = batch[ACTION_TOKENS].to(device).long(), batch[ACTION_TOKEN_MASK].to(device).bool()
            target, labels = valid.clone(), ids
        else:
            local, valid, target = self._split_targets(batch, device)
            ids, valid, target = self.model.local_to_vocab[local], valid.bool(), target.bool()
            labels = torch.where(local < self.model.n_fast, local, local - 1)  # local id -> candidate index
        length = int(valid.sum(dim=1).max())
        return ids[:, :length], valid[:, :length], target[:, :length], labels[:, :length]

    def forward(self, batch: dict[str, Tensor], reduction: str = "mean") -> tuple[Tensor, dict]:
        """Next-token cross-entropy on the action targets; logs ``ce_loss`` and ``token_accuracy``.
        ``reduction="none"`` gives per-sample losses."""
        images, img_masks = self._preprocess_images(batch)
        tokens, masks = batch[OBS_LANGUAGE_TOKENS], batch[OBS_LANGUAGE_ATTENTION_MASK]
        ids, valid, target, labels = self._action_sequence(batch, tokens.device)
        full = self.config.action_layout == "core"
        ce, correct, rows = self.model(images, img_masks, tokens, masks, ids, valid, target, labels, full)
        batch_size = tokens.shape[0]
        ce_sum = torch.zeros(batch_size, device=ce.device).index_add(0, rows, ce)
        count = torch.bincount(rows, minlength=batch_size)
        loss = ce_sum / count.clamp(min=1) if reduction == "none" else ce.sum() / max(ce.numel(), 1)
        logs = {
            "loss": loss.mean().item(),
            "ce_loss": loss.mean().item(),
            "token_accuracy": correct.float().mean().item() if correct.numel() else 0.0,
        }
        return loss, logs

    # ------------------------------------------------------------------ inference
    def _forced_prefix(self, batch_size: int, delay: int | None, leftover: Tensor | None) -> tuple[Tensor | None, int]:
        """Candidate indices ``[B, P]`` (left-padded with -1) of the whole sub-chunks of ``leftover`` to force, and
        the chunk steps they cover; ``(None, 0)`` when nothing is forced (no RTC config, no leftover, no delay).

        The forced sub-chunks are the fewest that cover the delay, ``ceil(delay / split_every)``: the steps the robot
        runs while this chunk is computed come out as the previous chunk's (up to the tokenizer's rounding), and so
        do the few steps up to the next sub-chunk boundary, where the generated part takes over. At most the whole
        sub-chunks the leftover holds within ``execution_horizon`` are forced, never the whole chunk. Trailing
        all-zero steps are LeRobot's padding of a short leftover (``_normalize_prev_actions_length``), not actions.
        """
        if not self._rtc_enabled() or leftover is None or not delay:
            return None, 0
        actions = leftover.detach().float().cpu().numpy()
        actions = np.broadcast_to(actions if actions.ndim == 3 else actions[None], (batch_size, *actions.shape[-2:]))
        real = np.flatnonzero(np.any(actions != 0, axis=(0, 2)))
        steps = min(int(real[-1]) + 1 if real.size else 0, self.config.rtc_config.execution_horizon)
        every = self.config.split_every
        n_forced = min(-(-delay // every), steps // every, self.layout.n_subchunks - 1)
        if n_forced <= 0:
            return None, 0
        split = self.model.n_fast  # SPLIT's candidate index
        subchunks = [self.fast_tokenizer.encode(actions[:, a:b], clip=True) for a, b in self.layout.bounds[:n_forced]]
        rows = [[token for sub in subchunks for token in (*sub[row], split)] for row in range(batch_size)]
        forced = torch.full((batch_size, max(map(len, rows))), -1, dtype=torch.long)
        for row, ids in enumerate(rows):
            forced[row, forced.shape[1] - len(ids) :] = torch.tensor(ids)
        return forced, n_forced * every

    @torch.no_grad()
    def predict_action_chunk(
        self,
        batch: dict[str, Tensor],
        *,
        inference_delay: int | None = None,
        prev_chunk_left_over: Tensor | None = None,
        **kwargs: Unpack[ActionSelectKwargs],
    ) -> Tensor:
        """A ``[B, chunk_size, action_dim]`` chunk (normalised), decoded under the exact grammar, so every chunk is
        complete and every coefficient inside the FAST tokenizer's range. ``self.last_decode`` reports the tokens.

        With ``rtc_config`` (``lerobot-rollout --inference.type=rtc``), ``prev_chunk_left_over`` (the previous
        chunk's still-queued normalised actions) and ``inference_delay`` (steps that run while this chunk is
        computed): prefix conditioning, not inpainting. The leftover's first ``ceil(delay / split_every)`` sub-chunks
        are re-encoded with the FAST tokenizer and forced after BOS in the prompt's forward pass; decoding goes on
        from the next sub-chunk (``_forced_prefix``).

        Should a chunk ever miss steps (no path of the grammar allows it), they hold the nearest decoded step, or the
        last action executed from the previous chunk (step ``n_action_steps - 1``), or at the start of an episode
        the normalised origin (the dataset's central action), with a warning.
        """
        self.eval()
        temperature = kwargs.get("temperature")
        images, img_masks = self._preprocess_images(batch)
        tokens, masks = batch[OBS_LANGUAGE_TOKENS], batch[OBS_LANGUAGE_ATTENTION_MASK]
        self.grammar = self.grammar.to(tokens.device)
        forced, forced_steps = self._forced_prefix(tokens.shape[0], inference_delay, prev_chunk_left_over)
        generated = self.model.generate(
            images,
            img_masks,
            tokens,
            masks,
            self.grammar,
            max_steps=self.max_decoding_steps,
            temperature=self.config.temperature if temperature is None else float(temperature),
            use_kv_cache=self.config.use_kv_cache,
            forced=None if forced is None else forced.to(tokens.device),
        )
        if forced is not None:  # the whole sequence, forced tokens first, EOS-padded
            rows = [torch.cat([f[f >= 0], g]) for f, g in zip(forced, generated.cpu(), strict=True)]
            generated = nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=self.model.n_fast + 1)
        action_dim = self.config.output_features[ACTION].shape[0]
        actions, report = actions_from_candidates(self.layout, generated, action_dim, self._previous_action, "pi0_fast")
        if forced is not None:
            report = replace(report, forced=(forced >= 0).sum(dim=1).numpy(), forced_steps=forced_steps)
        self.last_decode = report
        self._previous_action = actions[:, self.config.n_action_steps - 1].copy()
        return torch.as_tensor(actions, dtype=torch.float32, device=tokens.device)
