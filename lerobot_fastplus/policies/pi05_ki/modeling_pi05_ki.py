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

import torch
import torch.nn.functional as F
from lerobot.configs import PreTrainedConfig
from lerobot.lerobot_types import TransitionKey
from lerobot.policies.common.vla_utils import make_att_2d_masks, prepare_attention_masks_4d
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
from lerobot.utils.constants import ACTION, OBS_LANGUAGE_ATTENTION_MASK, OBS_LANGUAGE_TOKENS
from lerobot.utils.import_utils import require_package
from torch import Tensor, nn
from transformers.models.gemma import modeling_gemma

from lerobot_fastplus.fast.split_layout import ParsedActions, SplitLayout
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
    read_weights,
)
from lerobot_fastplus.policies.common.decoding import GrammarState, SplitGrammar, choose
from lerobot_fastplus.policies.pi05_ki.configuration_pi05_ki import (
    FAST_DECODING_RTC_REFUSAL,
    FAST_ID_BASE,
    INIT_WEIGHTS,
    PI05KIConfig,
)

logger = logging.getLogger(__name__)

EMBED_KEY = "model.paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight"


def compute_layer_ki(
    inputs_embeds: list[Tensor],
    attention_mask: Tensor,
    position_ids: Tensor,
    adarms_cond: list[Tensor | None],
    layers: tuple[nn.Module, nn.Module],
    rotary_emb: nn.Module,
    n_fast: int,
) -> list[Tensor]:
    """One shared-attention layer of backbone + expert with KI's stop-gradient.

    Same computation as LeRobot's ``compute_layer_complete`` except the attention, which skips the blocks that
    ``attention_mask`` (the joint 4-D mask; the last ``n_fast`` backbone tokens are FAST tokens) forbids anyway:
    image/prompt queries attend to image/prompt keys, FAST queries to image/prompt and FAST keys, and expert
    queries to the *detached* image/prompt keys/values plus the expert's own, so no gradient flows from the
    expert into the backbone. Each of the three blocks is one fused SDPA call (grouped K/V heads not repeated).
    """
    n_backbone = inputs_embeds[0].shape[1]
    n_prefix = n_backbone - n_fast
    queries, keys, values, gates = [], [], [], []
    for hidden, layer, cond in zip(inputs_embeds, layers, adarms_cond, strict=True):
        hidden, gate = layernorm_forward(layer.input_layernorm, hidden, cond)
        gates.append(gate)
        shape = (*hidden.shape[:-1], -1, layer.self_attn.head_dim)
        queries.append(layer.self_attn.q_proj(hidden).view(shape).transpose(1, 2))
        keys.append(layer.self_attn.k_proj(hidden).view(shape).transpose(1, 2))
        values.append(layer.self_attn.v_proj(hidden).view(shape).transpose(1, 2))
    cos, sin = rotary_emb(queries[0], position_ids)
    for i, span in enumerate((slice(None, n_backbone), slice(n_backbone, None))):
        queries[i], keys[i] = modeling_gemma.apply_rotary_pos_emb(
            queries[i], keys[i], cos[:, span], sin[:, span], unsqueeze_dim=1
        )
    (query, expert_query), (key, expert_key), (value, expert_value) = queries, keys, values

    scaling = layers[0].self_attn.scaling

    def attend(query: Tensor, key: Tensor, value: Tensor, mask: Tensor) -> Tensor:  # -> [B, queries, heads, dim]
        out = F.scaled_dot_product_attention(query, key, value, mask.to(query.dtype), scale=scaling, enable_gqa=True)
        return out.transpose(1, 2)

    prefix = slice(None, n_prefix)
    prefix_out = attend(
        query[:, :, prefix], key[:, :, prefix], value[:, :, prefix], attention_mask[:, :, prefix, prefix]
    )
    fast_out = attend(query[:, :, n_prefix:], key, value, attention_mask[:, :, n_prefix:n_backbone, :n_backbone])
    expert_out = attend(
        expert_query,
        torch.cat([key[:, :, prefix].detach(), expert_key], dim=2),
        torch.cat([value[:, :, prefix].detach(), expert_value], dim=2),
        torch.cat([attention_mask[:, :, n_backbone:, prefix], attention_mask[:, :, n_backbone:, n_backbone:]], dim=3),
    )
    backbone_out = torch.cat([prefix_out, fast_out], dim=1)

    outputs = []
    for hidden, layer, gate, cond, att in zip(
        inputs_embeds, layers, gates, adarms_cond, (backbone_out, expert_out), strict=True
    ):
        att = att.reshape(*hidden.shape[:-1], -1).to(layer.self_attn.o_proj.weight.dtype)
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
        vlm_config = paligemma_hf_config(config.paligemma_variant, config.image_resolution[0], use_adarms=False)
        self.paligemma = PaliGemmaForConditionalGenerationWithPiGemma(config=vlm_config)
        self.gemma_expert = PiGemmaForCausalLM(config=expert_hf_config(config.action_expert_variant, use_adarms=True))
        self.gemma_expert.model.embed_tokens = None
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
        backbone tokens are FAST tokens."""
        if inputs_embeds[0] is None or inputs_embeds[1] is None:  # prefix-only or expert-only: pi05's paths
            return super().forward(attention_mask, position_ids, past_key_values, inputs_embeds, use_cache, adarms_cond)
        adarms_cond = adarms_cond or [None, None]
        checkpointing = self.training and bool(getattr(self.gemma_expert.model, "gradient_checkpointing", False))
        layers = zip(self.paligemma.model.language_model.layers, self.gemma_expert.model.layers, strict=True)
        rotary_emb = self.paligemma.model.language_model.rotary_emb
        for pair in layers:
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
                    use_reentrant=False,
                    preserve_rng_state=False,
                )
            else:
                inputs_embeds = compute_layer_ki(
                    inputs_embeds, attention_mask, position_ids, adarms_cond, pair, rotary_emb, n_fast=n_fast
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

    def __init__(self, config: PI05KIConfig, n_fast_ids: int, rtc_processor: RTCProcessor | None = None) -> None:
        nn.Module.__init__(self)  # the parent's __init__ only knows the published variants
        if config.image_resolution[0] != config.image_resolution[1]:
            raise ValueError(f"PaliGemma needs square images; image_resolution={config.image_resolution}.")
        self.config = config
        self.rtc_processor = rtc_processor
        self.paligemma_with_expert = KIPaliGemmaWithExpertModel(config)
        width = gemma_variant(config.action_expert_variant).width
        self.action_in_proj = nn.Linear(config.max_action_dim, width)
        self.action_out_proj = nn.Linear(width, config.max_action_dim)
        self.time_mlp_in = nn.Linear(width, width)
        self.time_mlp_out = nn.Linear(width, width)
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
        return velocity, backbone_out[:, n_prefix:]

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
    def decode_fast(self, images: list[Tensor], img_masks: list[Tensor], tokens: Tensor, masks: Tensor) -> Tensor:
        """Greedy autoregressive layout ids ``[B, <= max_action_tokens - 1]`` (after BOS) from the FAST head.
        Only ids the split layout allows next can be chosen (pi0_fast's grammar); finished rows pad with EOS."""
        prefix_embs, prefix_pad, prefix_att = self.embed_prefix(images, img_masks, tokens, masks)
        language_model = self.paligemma_with_expert.paligemma.model.language_model
        language_model.config._attn_implementation = "eager"
        prefix = language_model.forward(
            inputs_embeds=prefix_embs,
            attention_mask=prepare_attention_masks_4d(make_att_2d_masks(prefix_pad, prefix_att)),
            position_ids=torch.cumsum(prefix_pad, dim=1) - 1,
            use_cache=True,
        )
        cache, key_pad = prefix.past_key_values, prefix_pad
        next_position = prefix_pad.sum(dim=1, keepdim=True)
        n = self.n_fast_ids
        grammar = SplitGrammar(n, self.config.n_subchunks)
        state = GrammarState.start(prefix_pad.shape[0], prefix_pad.device)
        token = torch.full_like(state.subchunk, n)  # BOS
        generated = []
        for step in range(self.config.max_action_tokens - 1):
            key_pad = torch.cat([key_pad, torch.ones_like(key_pad[:, :1])], dim=1)
            out = language_model.forward(
                inputs_embeds=self.paligemma_with_expert.embed_language_tokens(self.layout_to_vocab[token][:, None]),
                attention_mask=prepare_attention_masks_4d(key_pad[:, None, :]),
                position_ids=next_position + step,
                past_key_values=cache,
                use_cache=True,
            )
            # candidates are FAST ids, SPLIT, EOS; layout ids put BOS between FAST ids and SPLIT
            chosen = choose(self.fast_logits(out.last_hidden_state[:, -1]), grammar.legal(state), temperature=0.0)
            state = grammar.advance(state, chosen)
            token = torch.where(chosen < n, chosen, chosen + 1)
            generated.append(token)
            if bool(state.done.all()):
                break
        return torch.stack(generated, dim=1)


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
        load_init_weights: bool = True,
        **kwargs: Any,
    ) -> None:
        """``fast_tokenizer`` overrides ``config.fast_tokenizer_path``; ``load_init_weights=False`` skips
        ``config.init_from`` (``from_pretrained`` loads a checkpoint's own weights instead)."""
        require_package("transformers", extra="pi")
        PreTrainedPolicy.__init__(self, config)  # PI05Policy.__init__ would build pi05's model
        config.validate_features()
        self.config = config
        self.fast_tokenizer = config.load_fast_tokenizer(fast_tokenizer)  # checked against the dataset's action
        if config.init_from and load_init_weights:
            config.locate_init_weights()  # a wrong path fails before the model is allocated
        self.layout = SplitLayout(self.fast_tokenizer, config.chunk_size, config.split_every)
        if self.layout.n_fast_ids > FAST_ID_BASE + 1:
            raise ValueError(
                f"the FAST tokenizer has {self.layout.n_fast_ids} ids, more than the {FAST_ID_BASE + 1} PaliGemma ids "
                "they map onto; fit one with a smaller vocab_size (1024 or 2048 are usual)."
            )
        self._fallback_step: FastActionTokenizerStep | None = None
        # What the last ``action_decoding='fast'`` call recovered (per-step validity, reasons).
        self.last_decode: ParsedActions | None = None
        self.init_rtc_processor()
        self.model = PI05KIPytorch(config, self.layout.n_fast_ids, rtc_processor=self.rtc_processor)
        if config.gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
        self.model.to(config.device)
        self.reset()
        if config.init_from and load_init_weights:
            self.load_weights(config.init_from)

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
        policy = cls(config, fast_tokenizer=fast, load_init_weights=False, **kwargs)
        policy.load_weights(pretrained_name_or_path, **hub)
        policy.to(config.device)
        policy.eval()
        return policy

    def load_weights(self, pretrained_name_or_path: str | Path, **hub_kwargs: Any) -> None:
        """Load a pi05 or pi05_ki ``model.safetensors`` (local directory or hub id), strictly.

        Accepts LeRobot's and openpi-converted key names (pi05's own key fixes). Raises ``ValueError`` naming
        the missing, unexpected and wrongly shaped keys, or the unreadable file; never keeps random weights.
        """
        path, raw = read_weights(pretrained_name_or_path, INIT_WEIGHTS, **hub_kwargs)
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
        load_strictly(self, state, path, model, hint)
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
    def init_rtc_processor(self) -> None:
        """pi05's, refusing RTC with ``action_decoding='fast'``: ``lerobot-rollout --inference.type=rtc`` sets
        ``rtc_config`` on the built policy, past the config's own check, and the FAST decoder would ignore it."""
        rtc = self.config.rtc_config
        if self.config.action_decoding == "fast" and rtc is not None and rtc.enabled:
            raise ValueError(FAST_DECODING_RTC_REFUSAL)
        super().init_rtc_processor()

    @torch.no_grad()
    def predict_action_chunk(self, batch: dict[str, Tensor], **kwargs: Unpack[ActionSelectKwargs]) -> Tensor:
        """pi05's flow sampling (RTC kwargs pass through), or greedy FAST decoding with ``action_decoding='fast'``."""
        if self.config.action_decoding == "flow":
            return super().predict_action_chunk(batch, **kwargs)
        self.eval()
        images, img_masks = self._preprocess_images(batch)
        ids = self.model.decode_fast(images, img_masks, batch[OBS_LANGUAGE_TOKENS], batch[OBS_LANGUAGE_ATTENTION_MASK])
        dim = self.config.output_features[ACTION].shape[0]
        parsed = self.layout.parse(ids.cpu().numpy(), action_dim=dim)
        self.last_decode = parsed
        if parsed.n_failed:
            failed = [row for row in range(len(ids)) if parsed.missing_steps[row] > 0]
            logger.warning(
                "pi05_ki FAST decoding: %d of %d chunks lack decodable sub-chunks (first: %s); their steps hold the "
                "nearest decoded step.",
                parsed.n_failed,
                len(ids),
                ", ".join(parsed.reasons[failed[0]]),
            )
        return torch.as_tensor(parsed.actions, dtype=torch.float32, device=ids.device)
