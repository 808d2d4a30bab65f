"""pi05_ki: LeRobot's pi0.5 trained with Knowledge Insulation (KI, arXiv 2505.23705).

Training sequence: ``[images, prompt | FAST tokens of the target chunk | noisy action tokens]``.

* Image and prompt tokens attend bidirectionally among themselves; FAST tokens causally over the prompt and
  earlier FAST tokens; expert tokens over image/prompt and each other, never over FAST tokens; no backbone
  token sees expert tokens. Expert position ids continue right after the prompt, as at inference, where no
  FAST tokens exist.
* Stop-gradient: in every layer the backbone keys/values that expert queries attend to are detached, so the
  flow loss never updates the backbone (``compute_layer_ki``); backbone queries attend normally.
* Loss: ``fast_loss_weight * CE(FAST tokens) + flow_loss_weight * flow MSE``. The CE is computed from the
  backbone's hidden states at target positions only, through PaliGemma's LM head, which is tied to its input
  embedding (openpi decodes with the embedding table; LeRobot's port keeps an untied ``lm_head`` copy that pi05
  never trains; KI freezes it and the expert's unused ``lm_head``, so DDP has no unused parameters).

Inference is pi05's flow sampling (RTC included); ``action_decoding="fast"`` instead decodes the chunk greedily
from the FAST head, constrained to the split layout's grammar like pi0_fast. Parameters and state-dict keys are
exactly pi05's, so pi05 checkpoints load (strictly).
"""

from __future__ import annotations

import builtins
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Unpack

import numpy as np
import torch
import torch.nn.functional as F
from lerobot.configs import PreTrainedConfig
from lerobot.lerobot_types import TransitionKey
from lerobot.policies.act.modeling_act import ACTTemporalEnsembler
from lerobot.policies.common.vla_utils import make_att_2d_masks, pad_vector, prepare_attention_masks_4d
from lerobot.policies.pi05.modeling_pi05 import (
    ActionSelectKwargs,
    PaliGemmaWithExpertModel,
    PI05Policy,
    PI05Pytorch,
)
from lerobot.policies.pi_gemma import (
    PaliGemmaForConditionalGenerationWithPiGemma,
    PiGemmaForCausalLM,
    _gated_residual,
    layernorm_forward,
)
from lerobot.policies.pretrained import PreTrainedPolicy
from lerobot.policies.rtc.modeling_rtc import RTCProcessor
from lerobot.processor.converters import create_transition
from lerobot.utils.constants import ACTION, OBS_LANGUAGE_ATTENTION_MASK, OBS_LANGUAGE_TOKENS, OBS_STATE
from lerobot.utils.import_utils import require_package
from torch import Tensor, nn
from transformers.models.gemma import modeling_gemma

from lerobot_fastplus.fast.split_layout import SplitLayout
from lerobot_fastplus.fast.tokenizer import FastTokenizer
from lerobot_fastplus.fast_action_step import (
    ACTION_IS_PAD_KEY,
    ACTION_TOKEN_TARGET_KEY,
    ACTION_TOKEN_VALID_KEY,
    ACTION_TOKENS_KEY,
    FastActionTokenizerStep,
)
from lerobot_fastplus.policies.common.backbone import expert_hf_config, gemma_variant, paligemma_hf_config
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
)
from lerobot_fastplus.policies.common.state_embeddings import set_ordinal_state_embeddings
from lerobot_fastplus.policies.common.state_saturation import warn_if_state_saturates
from lerobot_fastplus.policies.common.token_budget import check_token_budget
from lerobot_fastplus.policies.pi05_ki.configuration_pi05_ki import (
    FAST_DECODING_RTC_REFUSAL,
    FAST_ID_BASE,
    INIT_WEIGHTS,
    PI05KIConfig,
)

logger = logging.getLogger(__name__)

EMBED_KEY = "model.paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight"


def _heads(x: Tensor, head_dim: int) -> Tensor:  # [B, tokens, heads * dim] -> [B, heads, tokens, dim]
    return x.unflatten(-1, (-1, head_dim)).transpose(1, 2)


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Gemma's rotary embedding (``apply_rotary_pos_emb``) of one tensor, so queries and keys may cover different
    tokens."""
    return x * cos[:, None] + modeling_gemma.rotate_half(x) * sin[:, None]


def compute_layer_ki(
    inputs_embeds: list[Tensor],
    attention_mask: Tensor,
    position_ids: Tensor,
    adarms_cond: list[Tensor | None],
    layers: tuple[nn.Module, ...],
    rotary_emb: nn.Module,
    n_fast: int,
    fast_outputs_only: bool = False,
) -> list[Tensor]:
    """One shared-attention layer of backbone + expert with KI's stop-gradient.

    Same computation as LeRobot's ``compute_layer_complete`` except the attention, which skips the blocks that
    ``attention_mask`` (the joint 4-D mask; the last ``n_fast`` backbone tokens are FAST tokens) forbids anyway:
    image/prompt queries attend to image/prompt keys, FAST queries to image/prompt and FAST keys, and expert
    queries to the *detached* image/prompt keys/values plus the expert's own, so no gradient flows from the
    expert into the backbone. Each of the three blocks is one fused SDPA call (grouped K/V heads not repeated).
    Given the backbone alone (one stream, one layer), the same without the expert: pi0_fast's teacher forcing.

    ``fast_outputs_only`` (the last layer): nothing reads the image/prompt tokens' outputs of the last layer, so they
    get keys and values only (no query, attention, MLP), and the backbone output holds the FAST tokens alone.
    Computed and then sliced off, they would also cost a backward pass over their zero gradients.
    """
    n_backbone = inputs_embeds[0].shape[1]
    n_prefix = n_backbone - n_fast
    # per stream: its positions in the joint sequence, and the rows that get queries and outputs
    spans = [slice(None, n_backbone), slice(n_backbone, None)][: len(inputs_embeds)]
    query_rows = [slice(n_prefix, None) if fast_outputs_only else slice(None), slice(None)][: len(inputs_embeds)]
    queries, keys, values, gates = [], [], [], []
    for hidden, layer, cond, rows in zip(inputs_embeds, layers, adarms_cond, query_rows, strict=True):
        hidden, gate = layernorm_forward(layer.input_layernorm, hidden, cond)
        gates.append(gate)
        attention, head_dim = layer.self_attn, layer.self_attn.head_dim
        queries.append(_heads(attention.q_proj(hidden[:, rows]), head_dim))
        keys.append(_heads(attention.k_proj(hidden), head_dim))
        values.append(_heads(attention.v_proj(hidden), head_dim))
    cos, sin = rotary_emb(queries[0], position_ids)
    for i, (span, rows) in enumerate(zip(spans, query_rows, strict=True)):
        cos_i, sin_i = cos[:, span], sin[:, span]
        queries[i] = _rotate(queries[i], cos_i[:, rows], sin_i[:, rows])
        keys[i] = _rotate(keys[i], cos_i, sin_i)
    query, key, value = queries[0], keys[0], values[0]

    scaling = layers[0].self_attn.scaling

    def attend(query: Tensor, key: Tensor, value: Tensor, mask: Tensor) -> Tensor:  # -> [B, queries, heads, dim]
        out = F.scaled_dot_product_attention(query, key, value, mask.to(query.dtype), scale=scaling, enable_gqa=True)
        return out.transpose(1, 2)

    prefix = slice(None, n_prefix)
    fast_query = query[:, :, query.shape[2] - n_fast :]
    backbone_out = attend(fast_query, key, value, attention_mask[:, :, n_prefix:n_backbone, :n_backbone])
    if not fast_outputs_only:
        prefix_out = attend(
            query[:, :, prefix], key[:, :, prefix], value[:, :, prefix], attention_mask[:, :, prefix, prefix]
        )
        backbone_out = torch.cat([prefix_out, backbone_out], dim=1)
    attention_out = [backbone_out]
    if len(inputs_embeds) > 1:
        expert_mask = attention_mask[:, :, n_backbone:]
        attention_out.append(
            attend(
                queries[1],
                torch.cat([key[:, :, prefix].detach(), keys[1]], dim=2),
                torch.cat([value[:, :, prefix].detach(), values[1]], dim=2),
                torch.cat([expert_mask[..., prefix], expert_mask[..., n_backbone:]], dim=3),
            )
        )

    outputs = []
    for hidden, layer, gate, cond, att, rows in zip(
        inputs_embeds, layers, gates, adarms_cond, attention_out, query_rows, strict=True
    ):
        hidden = hidden[:, rows]
        att = att.flatten(2).to(layer.self_attn.o_proj.weight.dtype)
        after_attention = _gated_residual(hidden, layer.self_attn.o_proj(att), gate)
        out, gate = layernorm_forward(layer.post_attention_layernorm, after_attention, cond)
        if layer.mlp.up_proj.weight.dtype == torch.bfloat16:
            out = out.to(dtype=torch.bfloat16)
        outputs.append(_gated_residual(after_attention, layer.mlp(out), gate))
    return outputs


class KIPaliGemmaWithExpertModel(PaliGemmaWithExpertModel):
    """pi05's backbone + expert, built from a variant name (tiny allowed), with KI's joint layers."""

    def __init__(self, config: PI05KIConfig) -> None:
        nn.Module.__init__(self)  # the parent's __init__ only knows the published SigLIP sizes
        self.freeze_vision_encoder = config.freeze_vision_encoder
        self.train_expert_only = config.train_expert_only
        with build_dtype(config.dtype):  # created in the target dtype (SigLIP in fp32), not all in fp32 and then cast
            # The expert first: its input embedding (unused, dropped) is then freed before the backbone exists, so
            # building never holds more than the final model.
            expert_config = expert_hf_config(config.action_expert_variant, use_adarms=True, dtype=config.dtype)
            expert = PiGemmaForCausalLM(config=expert_config)
            expert.model.embed_tokens = None
            size = config.image_resolution[0]
            vlm_config = paligemma_hf_config(config.paligemma_variant, size, text_dtype=config.dtype)
            self.paligemma = PaliGemmaForConditionalGenerationWithPiGemma(config=vlm_config)
        self.gemma_expert = expert
        self.to_bfloat16_for_selected_params(config.dtype)
        self._set_requires_grad()

    def _set_requires_grad(self) -> None:
        """pi05's freezing, plus the two LM heads that no loss reaches (the FAST head is the tied input embedding;
        the expert emits no tokens). Trainable, they would get no gradient: DDP without ``find_unused_parameters``
        rejects that, and with it still all-reduces their vocabulary x width zero gradients every step."""
        super()._set_requires_grad()
        for head in (self.paligemma.lm_head, self.gemma_expert.lm_head):
            head.weight.requires_grad_(False)

    def forward(
        self,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        past_key_values: Any = None,
        inputs_embeds: list[Tensor | None] | None = None,
        use_cache: bool | None = None,
        adarms_cond: list[Tensor | None] | None = None,
        n_fast: int = 0,
    ) -> tuple[list[Tensor | None], Any]:
        """pi05's forward; with both backbone and expert embeddings, KI's joint layers, where the last ``n_fast``
        backbone tokens are FAST tokens, and the backbone's output holds those alone (the only ones a loss reads)."""
        if inputs_embeds[0] is None or inputs_embeds[1] is None:  # prefix-only or expert-only: pi05's paths
            return super().forward(attention_mask, position_ids, past_key_values, inputs_embeds, use_cache, adarms_cond)
        adarms_cond = adarms_cond or [None, None]
        checkpointing = self.training and bool(getattr(self.gemma_expert.model, "gradient_checkpointing", False))
        layers = list(zip(self.paligemma.model.language_model.layers, self.gemma_expert.model.layers, strict=True))
        rotary_emb = self.paligemma.model.language_model.rotary_emb
        for depth, pair in enumerate(layers, start=1):
            last = depth == len(layers)
            if checkpointing:
                inputs_embeds = torch.utils.checkpoint.checkpoint(
                    compute_layer_ki,
                    inputs_embeds,
                    attention_mask,
                    position_ids,
                    adarms_cond,
                    layers=pair,
                    rotary_emb=rotary_emb,
                    n_fast=n_fast,
                    fast_outputs_only=last,
                    use_reentrant=False,
                    preserve_rng_state=False,
                )
            else:
                inputs_embeds = compute_layer_ki(
                    inputs_embeds,
                    attention_mask,
                    position_ids,
                    adarms_cond,
                    pair,
                    rotary_emb,
                    n_fast=n_fast,
                    fast_outputs_only=last,
                )
        norms = (self.paligemma.model.language_model.norm, self.gemma_expert.model.norm)
        outputs = [
            layernorm_forward(norm, h, c)[0] for norm, h, c in zip(norms, inputs_embeds, adarms_cond, strict=True)
        ]
        return outputs, None


@dataclass
class KILosses:
    """Unreduced training terms: flow squared error ``[B, T, max_action_dim]``; per FAST target token its
    cross-entropy, whether the argmax was right, and its batch row."""

    flow_se: Tensor
    fast_ce: Tensor
    fast_correct: Tensor
    fast_rows: Tensor


class PI05KIPytorch(PI05Pytorch):
    """pi05's model with a FAST-token branch in the backbone and KI's attention."""

    def __init__(
        self,
        config: PI05KIConfig,
        n_fast_ids: int,
        rtc_processor: RTCProcessor | None = None,
        *,
        empty_weights: bool = False,
    ) -> None:
        """``empty_weights``: parameters on the meta device, for a checkpoint to fill (``common.construction``)."""
        nn.Module.__init__(self)  # the parent's __init__ only knows the published variants
        if config.image_resolution[0] != config.image_resolution[1]:
            raise ValueError(f"PaliGemma needs square images; image_resolution={config.image_resolution}.")
        self.config = config
        self.rtc_processor = rtc_processor
        with parameters_on_meta(empty_weights):
            self.paligemma_with_expert = KIPaliGemmaWithExpertModel(config)
            width = gemma_variant(config.action_expert_variant).width
            self.action_in_proj = nn.Linear(config.max_action_dim, width)  # fp32, as in pi05
            self.action_out_proj = nn.Linear(width, config.max_action_dim)
            self.time_mlp_in = nn.Linear(width, width)
            self.time_mlp_out = nn.Linear(width, width)
            self.state_proj = nn.Linear(config.max_state_dim, width) if config.expert_state_token else None
        self._expert_state: Tensor | None = None  # set only inside reading_state()
        self.gradient_checkpointing_enabled = False

        # Layout ids (FAST 0..n-1, BOS, SPLIT, EOS) -> PaliGemma ids; the FAST head scores FAST ids, SPLIT, EOS.
        fast_vocab = FAST_ID_BASE - torch.arange(n_fast_ids)
        bos, split, eos = (torch.tensor([i]) for i in config.action_special_ids)
        self.n_fast_ids = n_fast_ids
        self.register_buffer("layout_to_vocab", torch.cat([fast_vocab, bos, split, eos]), persistent=False)
        self.register_buffer("action_vocab", torch.cat([fast_vocab, split, eos]), persistent=False)
        if config.compile_model:
            torch.set_float32_matmul_precision("high")
            self.sample_actions = torch.compile(self.sample_actions, mode=config.compile_mode)
            self.forward = torch.compile(self.forward, mode=config.compile_mode)

    @contextlib.contextmanager
    def reading_state(self, state: Tensor) -> Iterator[None]:
        """Within the block, ``embed_suffix`` gives the expert ``state`` ([B, max_state_dim], normalised) as a token
        (``expert_state_token``); pi05's call chain down to ``embed_suffix`` has no state argument."""
        self._expert_state = state
        try:
            yield
        finally:
            self._expert_state = None

    def embed_suffix(self, noisy_actions: Tensor, timestep: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """pi05's suffix, with ``expert_state_token`` preceded by the state token: the actions attend to it, it
        attends to the prefix and itself only (pi0's blocks). The velocity is read from the last chunk_size tokens."""
        embs, pad, att, adarms_cond = super().embed_suffix(noisy_actions, timestep)
        if self.state_proj is None:
            return embs, pad, att, adarms_cond
        if self._expert_state is None:
            raise RuntimeError("pi05_ki expert_state_token: call the model inside reading_state(state).")
        state = self.state_proj(self._expert_state.clamp(-1, 1).to(self.state_proj.weight.dtype))
        first = torch.ones_like(pad[:, :1])
        return (
            torch.cat([state[:, None].to(embs.dtype), embs], dim=1),
            torch.cat([first, pad], dim=1),
            torch.cat([torch.ones_like(att[:, :1]), att], dim=1),
            adarms_cond,
        )

    @torch.no_grad()
    def sample_actions(
        self,
        images: list[Tensor],
        img_masks: list[Tensor],
        tokens: Tensor,
        masks: Tensor,
        noise: Tensor | None = None,
        num_steps: int | None = None,
        **kwargs: Any,
    ) -> Tensor:
        """pi05's flow sampling, started from noise scaled by ``flow_noise_scale`` unless the caller passes noise."""
        if noise is None and self.config.flow_noise_scale != 1.0:
            shape = (tokens.shape[0], self.config.chunk_size, self.config.max_action_dim)
            noise = self.config.flow_noise_scale * self.sample_noise(shape, tokens.device)
        return super().sample_actions(images, img_masks, tokens, masks, noise=noise, num_steps=num_steps, **kwargs)

    def _is_bfloat16(self) -> bool:
        layer = self.paligemma_with_expert.paligemma.model.language_model.layers[0]
        return layer.self_attn.q_proj.weight.dtype == torch.bfloat16

    def fast_logits(self, hidden: Tensor, *, full_vocabulary: bool = False) -> Tensor:
        """Scores of the FAST head (tied LM head): over the action ids, or over the whole vocabulary.

        The action rows are gathered with a sparse gradient: autograd adds it into the dense gradient of the
        prompt's embedding lookup instead of allocating a second dense ``[vocabulary, width]`` one."""
        table = self.paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight
        weight = table if full_vocabulary else F.embedding(self.action_vocab, table, sparse=True)
        return hidden.float() @ weight.float().T

    def velocity_and_fast_hidden(
        self,
        images: list[Tensor],
        img_masks: list[Tensor],
        tokens: Tensor,
        masks: Tensor,
        x_t: Tensor,
        time: Tensor,
        fast_ids: Tensor,
        fast_valid: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """Expert velocity at ``(x_t, time)`` ``[B, T, max_action_dim]`` and backbone hidden states of the FAST
        tokens ``[B, L, width]`` (after the final norm), from one joint forward."""
        # FAST tokens are embedded in the same lookup as the prompt (one dense embedding gradient, not two)
        fast_valid = fast_valid.bool()
        backbone_embs, backbone_pad, _ = self.embed_prefix(
            images,
            img_masks,
            torch.cat([tokens, self.layout_to_vocab[fast_ids]], dim=1),
            torch.cat([masks, fast_valid], 1),
        )
        suffix_embs, suffix_pad, suffix_att, adarms_cond = self.embed_suffix(x_t, time)
        if self._is_bfloat16():
            backbone_embs, suffix_embs = backbone_embs.to(torch.bfloat16), suffix_embs.to(torch.bfloat16)
        n_backbone = backbone_embs.shape[1]
        n_prefix = n_backbone - fast_ids.shape[1]
        prefix_pad = backbone_pad[:, :n_prefix]

        pad = torch.cat([backbone_pad, suffix_pad], dim=1)
        # image + prompt: one bidirectional block; FAST: causal; expert: pi05's suffix blocks after them
        block = torch.zeros_like(backbone_pad, dtype=torch.long)
        block[:, n_prefix:] = 1
        att = torch.cat([block, suffix_att.long()], dim=1)
        att_2d = make_att_2d_masks(pad, att)
        att_2d[:, n_backbone:, n_prefix:n_backbone] = False  # expert tokens never see FAST tokens
        backbone_positions = torch.cumsum(backbone_pad, dim=1) - 1
        expert_positions = prefix_pad.sum(dim=1, keepdim=True) + torch.cumsum(suffix_pad, dim=1) - 1
        position_ids = torch.cat([backbone_positions, expert_positions], dim=1)
        mask_4d = prepare_attention_masks_4d(att_2d)

        def joint_forward(
            backbone_embs: Tensor, suffix_embs: Tensor, mask_4d: Tensor, position_ids: Tensor, adarms_cond: Tensor
        ) -> list[Tensor]:
            outputs, _ = self.paligemma_with_expert.forward(
                attention_mask=mask_4d,
                position_ids=position_ids,
                inputs_embeds=[backbone_embs, suffix_embs],
                use_cache=False,
                adarms_cond=[None, adarms_cond],
                n_fast=fast_ids.shape[1],
            )
            return outputs

        backbone_out, suffix_out = self._apply_checkpoint(
            joint_forward, backbone_embs, suffix_embs, mask_4d, position_ids, adarms_cond
        )
        suffix_out = suffix_out[:, -self.config.chunk_size :].to(torch.float32)
        velocity = self._apply_checkpoint(self.action_out_proj, suffix_out)
        return velocity, backbone_out

    def forward(
        self,
        images: list[Tensor],
        img_masks: list[Tensor],
        tokens: Tensor,
        masks: Tensor,
        actions: Tensor,
        noise: Tensor,
        time: Tensor,
        fast_ids: Tensor,
        fast_valid: Tensor,
        fast_target: Tensor,
    ) -> KILosses:
        """Training forward: flow-matching error of the expert and next-token CE of the FAST targets."""
        t = time[:, None, None]
        x_t = t * noise + (1 - t) * actions
        velocity, fast_hidden = self.velocity_and_fast_hidden(
            images, img_masks, tokens, masks, x_t, time, fast_ids, fast_valid
        )
        flow_se = F.mse_loss(noise - actions, velocity, reduction="none")

        predicted = fast_target[:, 1:].bool()  # the hidden state at position i predicts token i + 1
        hidden = fast_hidden[:, :-1][predicted]
        targets = fast_ids[:, 1:][predicted]
        full = self.config.fast_ce_vocabulary == "full"
        logits = self.fast_logits(hidden, full_vocabulary=full)
        # layout id -> index in action_vocab: FAST ids keep theirs, SPLIT/EOS shift down past BOS
        labels = self.layout_to_vocab[targets] if full else torch.where(targets < self.n_fast_ids, targets, targets - 1)
        fast_ce = F.cross_entropy(logits, labels, reduction="none")
        return KILosses(flow_se, fast_ce, logits.argmax(dim=-1) == labels, predicted.nonzero()[:, 0])

    @torch.no_grad()
    def decode_fast(
        self,
        images: list[Tensor],
        img_masks: list[Tensor],
        tokens: Tensor,
        masks: Tensor,
        grammar: ExactGrammar,
        *,
        max_steps: int | None = None,
        temperature: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Candidate indices ``[B, <= grammar.max_length]`` (FAST ids, SPLIT, EOS; EOS-padded once a row is done)
        decoded from the FAST head under the exact grammar, after the training sequence's prefix and BOS."""
        bos = self.layout_to_vocab[self.n_fast_ids].expand(tokens.shape[0], 1)
        embs, pad, att = self.embed_prefix(
            images,
            img_masks,
            torch.cat([tokens, bos], dim=1),
            torch.cat([masks.bool(), torch.ones_like(bos, dtype=torch.bool)], dim=1),
        )
        att = att.clone()
        att[:, -1] = True  # BOS is causal, after the bidirectional image + prompt block, as in training
        if self._is_bfloat16():
            embs = embs.to(torch.bfloat16)
        language_model = self.paligemma_with_expert.paligemma.model.language_model
        language_model.config._attn_implementation = "eager"
        prefix = language_model.forward(
            inputs_embeds=embs,
            attention_mask=prepare_attention_masks_4d(make_att_2d_masks(pad, att), dtype=embs.dtype),
            position_ids=torch.cumsum(pad, dim=1) - 1,
            use_cache=True,
        )
        keys = [layer.keys for layer in prefix.past_key_values.layers]
        values = [layer.values for layer in prefix.past_key_values.layers]
        weight = self.paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight[self.action_vocab]

        def step(chosen: Tensor) -> Tensor:
            nonlocal pad
            pad = torch.cat([pad, torch.ones_like(pad[:, :1])], dim=1)
            emb = self.paligemma_with_expert.embed_language_tokens(self.action_vocab[chosen][:, None]).to(embs.dtype)
            return cached_language_model_step(language_model, emb, pad, keys, values)

        return decode_constrained(
            prefix.last_hidden_state[:, -1],
            step,
            weight.float(),
            grammar,
            max_steps=max_steps,
            temperature=temperature,
            generator=generator,
        )


class _DropPatchEmbeddingNotes(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Vision embedding key might need handling")


@contextlib.contextmanager
def _quiet_patch_embedding_notes() -> Iterator[None]:
    """pi05's key fixer warns "Vision embedding key might need handling" for every SigLIP patch-embedding tensor
    of every checkpoint, though it changes nothing; strict loading reports real mismatches instead."""
    note_filter = _DropPatchEmbeddingNotes()
    logging.getLogger().addFilter(note_filter)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(note_filter)


class PI05KIPolicy(StateOnlyCameras, PI05Policy):
    """pi0.5 with Knowledge Insulation; a drop-in for LeRobot's pi05 tooling (eval, rollout, RTC)."""

    config_class = PI05KIConfig
    name = "pi05_ki"

    def __init__(
        self,
        config: PI05KIConfig,
        *,
        fast_tokenizer: FastTokenizer | None = None,
        weights_from: str | Path | None = None,
        hub_kwargs: dict[str, Any] | None = None,
        dataset_stats: dict[str, dict[str, Any]] | None = None,
        **kwargs: Any,
    ) -> None:
        """``fast_tokenizer`` overrides ``config.fast_tokenizer_path``. The weights come from ``weights_from`` (a
        checkpoint directory or hub id, fetched with ``hub_kwargs``; ``from_pretrained`` passes the checkpoint it
        loads), else from ``config.init_from``, else they are random; a checkpoint is streamed into an empty model,
        never held twice. A new policy checks its state normalisation against ``dataset_stats`` (``make_policy``
        passes the dataset's)."""
        require_package("transformers", extra="pi")
        PreTrainedPolicy.__init__(self, config)  # PI05Policy.__init__ would build pi05's model
        config.validate_features()
        self.config = config
        self.fast_tokenizer = config.load_fast_tokenizer(fast_tokenizer)  # checked against the dataset's action
        if weights_from is None:
            warn_if_state_saturates(config, dataset_stats, "pi05_ki")
            if config.init_from:
                config.locate_init_weights()  # a wrong path fails before the model is built
                weights_from = config.init_from
        self.layout = SplitLayout(self.fast_tokenizer, config.chunk_size, config.split_every)
        if self.layout.n_fast_ids > FAST_ID_BASE + 1:
            raise ValueError(
                f"the FAST tokenizer has {self.layout.n_fast_ids} ids, more than the {FAST_ID_BASE + 1} PaliGemma ids "
                "they map onto; fit one with a smaller vocab_size (1024 or 2048 are usual)."
            )
        check_token_budget(config, self.layout, kwargs.get("dataset_meta"))  # before the first training step
        self.grammar, self.max_decoding_steps = build_decoding_grammar(
            self.layout, config.output_features[ACTION].shape[0], config.max_decoding_steps, config.device
        )
        self._fallback_step: FastActionTokenizerStep | None = None
        # What the last ``action_decoding='fast'`` call decoded (tokens, per-step validity, reasons).
        self.last_decode: DecodeReport | None = None
        self.last_disagreement: Tensor | None = None  # per chunk, with report_disagreement
        self.init_rtc_processor()
        self.model = PI05KIPytorch(
            config, self.layout.n_fast_ids, rtc_processor=self.rtc_processor, empty_weights=weights_from is not None
        )
        if config.gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
        if weights_from is not None:
            self.load_weights(weights_from, **(hub_kwargs or {}))
        elif config.ordinal_state_embeddings:
            table = self.model.paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight
            set_ordinal_state_embeddings(table, config.text_tokenizer_name)
        self.model.to(config.device)
        require_materialized(self, "pi05_ki")
        self.reset()

    # ------------------------------------------------------------------ weights
    @classmethod
    def from_pretrained(
        cls: builtins.type[PI05KIPolicy],
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
    ) -> PI05KIPolicy:
        """Load a pi05_ki checkpoint, or a pi05 one given a ``PI05KIConfig``; strict, raises on any mismatch."""
        if not strict:
            raise ValueError("pi05_ki always loads strictly (a partial load would silently keep random weights).")
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
        if not isinstance(config, PI05KIConfig):
            raise ValueError(
                f"{pretrained_name_or_path} holds a {type(config).__name__} ('{config.type}'), not a pi05_ki config. "
                "To start pi05_ki from it, pass config=PI05KIConfig(...) or train with --policy.type=pi05_ki "
                f"--policy.init_from={pretrained_name_or_path}."
            )
        fast_dir = checkpoint_fast_tokenizer_dir(pretrained_name_or_path, **hub)
        fast = FastTokenizer.load(fast_dir) if fast_dir is not None else None
        policy = cls(config, fast_tokenizer=fast, weights_from=pretrained_name_or_path, hub_kwargs=hub, **kwargs)
        policy.eval()
        return policy

    def load_weights(self, pretrained_name_or_path: str | Path, **hub_kwargs: Any) -> None:
        """Load a pi05 or pi05_ki ``model.safetensors`` (local directory or hub id), strictly, streamed into the
        model (parameters still on the meta device are allocated on ``config.device``).

        Accepts LeRobot's and openpi-converted key names (pi05's own key fixes, applied to the file's header).
        Raises ``ValueError`` naming the missing, unexpected and wrongly shaped keys, or the unreadable file, before
        any weight is read; never keeps random weights.
        """
        path, raw = read_header(pretrained_name_or_path, INIT_WEIGHTS, **hub_kwargs)
        with _quiet_patch_embedding_notes():
            fixed = self._fix_pytorch_state_dict_keys(raw, self.config)
        state = {key if key.startswith("model.") else f"model.{key}": value for key, value in fixed.items()}
        if EMBED_KEY in raw:  # pi05's key fix overwrites the input embedding with lm_head; KI trains the former
            state[EMBED_KEY] = raw[EMBED_KEY]
        model = (
            f"pi05_ki model ({self.config.paligemma_variant} backbone, {self.config.action_expert_variant} expert, "
            f"max_action_dim={self.config.max_action_dim})"
        )
        hint = "Set the variants and max_action_dim to the checkpoint's, or use a pi05 / pi05_ki checkpoint."
        load_strictly(self, state, path, model, hint, device=self.config.device)
        logger.info("pi05_ki: loaded all %d tensors from %s", len(state), path)

    def _save_pretrained(self, save_directory: Path, state_dict: dict[str, Tensor] | None = None) -> None:
        super()._save_pretrained(save_directory, state_dict=state_dict)
        self.fast_tokenizer.save(Path(save_directory) / FAST_TOKENIZER_DIR)

    # ------------------------------------------------------------------ training
    def _fast_targets(self, batch: dict[str, Any], device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        """Split-layout FAST ids and masks: from the FAST processor step, or tokenized here when the batch comes
        through processors without that step (e.g. a pi05 checkpoint's, with ``--policy.pretrained_path``)."""
        if ACTION_TOKENS_KEY not in batch:
            if self._fallback_step is None:
                logger.info(
                    "pi05_ki: the batch has no %s (its preprocessor lacks the FAST step); tokenizing the normalised "
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

    def forward(self, batch: dict[str, Tensor], reduction: str = "mean") -> tuple[Tensor, dict]:
        """KI loss of a training batch; ``reduction="none"`` gives per-sample losses (RA-BC weighting)."""
        images, img_masks = self._preprocess_images(batch)
        tokens, masks = batch[OBS_LANGUAGE_TOKENS], batch[OBS_LANGUAGE_ATTENTION_MASK]
        actions = self.prepare_action(batch)
        fast_ids, fast_valid, fast_target = self._fast_targets(batch, actions.device)
        noise = self.model.sample_noise(actions.shape, actions.device)
        time = self.model.sample_time(actions.shape[0], actions.device)
        with self._expert_reading(batch):
            out = self.model(images, img_masks, tokens, masks, actions, noise, time, fast_ids, fast_valid, fast_target)

        batch_size, dim = actions.shape[0], self.config.output_features[ACTION].shape[0]
        step_valid = ~batch[ACTION_IS_PAD_KEY].bool() if ACTION_IS_PAD_KEY in batch else None
        if step_valid is None:
            step_valid = torch.ones(out.flow_se.shape[:2], dtype=torch.bool, device=actions.device)
        flow_sum = (out.flow_se[:, :, :dim] * step_valid[..., None]).sum(dim=(1, 2))
        flow_count = step_valid.sum(dim=1) * dim
        ce_sum = torch.zeros(batch_size, device=actions.device).index_add(0, out.fast_rows, out.fast_ce)
        ce_count = torch.bincount(out.fast_rows, minlength=batch_size)
        w_fast, w_flow = self.config.fast_loss_weight, self.config.flow_loss_weight
        if reduction == "none":
            flow_loss = flow_sum / flow_count.clamp(min=1)
            fast_ce_loss = ce_sum / ce_count.clamp(min=1)
        else:
            flow_loss = flow_sum.sum() / flow_count.sum().clamp(min=1)
            fast_ce_loss = ce_sum.sum() / ce_count.sum().clamp(min=1)
        loss = w_fast * fast_ce_loss + w_flow * flow_loss
        n_targets = max(out.fast_correct.numel(), 1)
        logs = {
            "loss": loss.mean().item(),
            "flow_loss": flow_loss.mean().item(),
            "fast_ce_loss": fast_ce_loss.mean().item(),
            "fast_token_accuracy": out.fast_correct.sum().item() / n_targets,
        }
        return loss, logs

    # ------------------------------------------------------------------ inference
    def reset(self) -> None:
        super().reset()
        self._previous_action: np.ndarray | None = None  # last executed action of the previous FAST-decoded chunk
        coeff = self.config.temporal_ensemble_coeff
        self._ensembler = None if coeff is None else ACTTemporalEnsembler(coeff, self.config.chunk_size)

    @torch.no_grad()
    def select_action(self, batch: dict[str, Tensor], **kwargs: Any) -> Tensor:
        """pi05's action queue, or with ``temporal_ensemble_coeff`` a new chunk at every step, ensembled."""
        if self._ensembler is None:
            return super().select_action(batch, **kwargs)
        self.eval()
        return self._ensembler.update(self.predict_action_chunk(batch))

    def init_rtc_processor(self) -> None:
        """pi05's, refusing RTC with ``action_decoding='fast'``: ``lerobot-rollout --inference.type=rtc`` sets
        ``rtc_config`` on the built policy, past the config's own check, and the FAST decoder would ignore it."""
        rtc = self.config.rtc_config
        if self.config.action_decoding == "fast" and rtc is not None and rtc.enabled:
            raise ValueError(FAST_DECODING_RTC_REFUSAL)
        super().init_rtc_processor()

    @torch.no_grad()
    def predict_action_chunk(self, batch: dict[str, Tensor], **kwargs: Unpack[ActionSelectKwargs]) -> Tensor:
        """pi05's flow sampling (RTC kwargs pass through), or with ``action_decoding='fast'`` autoregressive decoding
        of the FAST head under the exact grammar (greedy, or sampled at ``fast_decoding_temperature``), reported in
        ``self.last_decode``; like pi0_fast, it never acts on an undecoded (all-zero) chunk. With
        ``report_disagreement`` the other decoding runs too, only to measure how far the two chunks disagree."""
        if self.config.action_decoding == "flow":
            with self._expert_reading(batch):
                chunk = super().predict_action_chunk(batch, **kwargs)
            if self.config.report_disagreement:
                self._record_disagreement(chunk, self._decode_fast_chunk(batch, acting=False))
            return chunk
        chunk = self._decode_fast_chunk(batch, acting=True)
        if self.config.report_disagreement:
            with self._expert_reading(batch):
                self._record_disagreement(super().predict_action_chunk(batch), chunk)
        return chunk

    def _expert_reading(self, batch: dict[str, Tensor]) -> contextlib.AbstractContextManager:
        """With ``expert_state_token``: the model's flow calls read the batch's normalised state."""
        if not self.config.expert_state_token:
            return contextlib.nullcontext()
        return self.model.reading_state(pad_vector(batch[OBS_STATE], self.config.max_state_dim))

    def _decode_fast_chunk(self, batch: dict[str, Tensor], acting: bool) -> Tensor:
        """The FAST head's chunk; ``acting``: it is the chunk the robot executes (remembered for the fill rule)."""
        self.eval()
        images, img_masks = self._preprocess_images(batch)
        tokens = batch[OBS_LANGUAGE_TOKENS]
        self.grammar = self.grammar.to(tokens.device)
        candidates = self.model.decode_fast(
            images,
            img_masks,
            tokens,
            batch[OBS_LANGUAGE_ATTENTION_MASK],
            self.grammar,
            max_steps=self.max_decoding_steps,
            temperature=self.config.fast_decoding_temperature,
        )
        dim = self.config.output_features[ACTION].shape[0]
        actions, self.last_decode = actions_from_candidates(
            self.layout, candidates, dim, self._previous_action, "pi05_ki FAST decoding"
        )
        if acting:
            self._previous_action = actions[:, self.config.n_action_steps - 1].copy()
        return torch.as_tensor(actions, dtype=torch.float32, device=tokens.device)

    def _record_disagreement(self, flow: Tensor, fast: Tensor) -> None:
        """Per chunk: mean squared difference of the two decodings over the executed steps, in the policy's
        normalised action space (large: the chunk is likely a bad one)."""
        steps, dim = self.config.n_action_steps, fast.shape[-1]
        difference = flow[:, :steps, :dim].float() - fast[:, :steps, :dim].to(flow.device)
        self.last_disagreement = difference.pow(2).mean(dim=(1, 2)).detach().cpu()
        logger.info(
            "pi05_ki AR-vs-flow disagreement (normalised MSE per chunk; larger: less confident): %s",
            ", ".join(f"{value:.4f}" for value in self.last_disagreement.tolist()),
        )
