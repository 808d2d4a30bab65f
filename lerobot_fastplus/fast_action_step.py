"""Processor step: normalised action chunks -> split-layout FAST token ids for training.

It belongs in a policy preprocessor after LeRobot's ``NormalizerProcessorStep`` (FAST expects actions
normalised to about [-1, 1]) and writes three tensors into the transition's complementary data, which
LeRobot merges into the batch the policy receives:

* ``ACTION_TOKENS_KEY``: int64 ``[B, L]`` layout ids (``BOS, sub-chunk tokens, SPLIT, ..., EOS``),
  padded with EOS to the longest sequence of the batch;
* ``ACTION_TOKEN_VALID_KEY``: bool ``[B, L]``, the real tokens;
* ``ACTION_TOKEN_TARGET_KEY``: bool ``[B, L]``, the tokens to predict (no BOS, no fully padded sub-chunks).

The keys differ from core's ``action.tokens`` / ``action.token_mask`` on purpose: those hold PaliGemma ids
in another layout, and a core policy must never read ours by mistake.

The fitted tokenizer is embedded in the step's config, so a checkpoint's processor JSON alone rebuilds the
step, offline, even after the tokenizer directory is gone.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from lerobot.configs import PipelineFeatureType, PolicyFeature
from lerobot.lerobot_types import EnvTransition, TransitionKey
from lerobot.processor import ProcessorStep, ProcessorStepRegistry
from lerobot.utils.constants import ACTION

from lerobot_fastplus.fast.split_layout import SplitLayout
from lerobot_fastplus.fast.tokenizer import FastTokenizer

logger = logging.getLogger(__name__)

REGISTRY_NAME = "fastplus_fast_action_tokens"
ACTION_TOKENS_KEY = "fastplus.action_tokens"
ACTION_TOKEN_VALID_KEY = "fastplus.action_token_valid"
ACTION_TOKEN_TARGET_KEY = "fastplus.action_token_target"
ACTION_IS_PAD_KEY = f"{ACTION}_is_pad"
CLIP_WARNING_INTERVAL_S = 60.0


@ProcessorStepRegistry.register(name=REGISTRY_NAME)
@dataclass
class FastActionTokenizerStep(ProcessorStep):
    """Tokenize the normalised ``action`` chunk of a training batch into split-layout FAST ids.

    Give the tokenizer either embedded (``tokenizer``: ``FastTokenizer.to_dict()``) or as ``tokenizer_path``
    (a local directory or hub id); the embedded copy wins, and ``get_config`` always embeds it, keeping the
    path only as provenance. ``clip`` (default True) clips DCT coefficients the vocabulary cannot encode
    instead of failing the training run; every clip is counted and reported in a rate-limited warning.
    With ``clip=False`` such a batch raises. A chunk whose sequence would exceed ``max_tokens`` keeps the
    sub-chunks that fit; the others are dropped from the targets, counted and reported the same way (the
    policy checks a sample of the dataset against ``max_tokens`` before training starts). Without an
    action (inference) the step does nothing.
    """

    tokenizer_path: str | None = None
    tokenizer: dict[str, Any] | None = field(default=None, repr=False)
    chunk_size: int = 50
    split_every: int = 10
    max_tokens: int | None = None
    clip: bool = True

    layout: SplitLayout = field(init=False, repr=False)
    _clipped_coefficients: int = field(default=0, init=False, repr=False)
    _clipped_chunks: int = field(default=0, init=False, repr=False)
    _last_clip_warning: float = field(default=-math.inf, init=False, repr=False)
    _dropped_subchunks: int = field(default=0, init=False, repr=False)
    _last_drop_warning: float = field(default=-math.inf, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.tokenizer is not None:
            fast = FastTokenizer.from_dict(self.tokenizer)
        elif self.tokenizer_path is not None:
            fast = FastTokenizer.load(self.tokenizer_path)
        else:
            raise ValueError(
                f"{REGISTRY_NAME} needs a FAST tokenizer: set tokenizer_path to a tokenizer directory (e.g. one "
                "written by fastplus-train-tokenizer) or hub id, or pass tokenizer=FastTokenizer.to_dict()."
            )
        self.layout = SplitLayout(fast, self.chunk_size, self.split_every)
        if fast.time_horizon is not None and fast.time_horizon != self.split_every:
            logger.warning(
                "%s: the FAST tokenizer was fitted on %d-step chunks but split_every=%d; coefficients will be "
                "distributed differently (longer sequences, more clipping). Refit it with a time horizon of "
                "split_every, or set split_every=%d.",
                REGISTRY_NAME,
                fast.time_horizon,
                self.split_every,
                fast.time_horizon,
            )

    @property
    def fast_tokenizer(self) -> FastTokenizer:
        return self.layout.tokenizer

    def __call__(self, transition: EnvTransition) -> EnvTransition:
        action = transition.get(TransitionKey.ACTION)
        if action is None:
            return transition
        if not isinstance(action, torch.Tensor) or action.ndim not in (2, 3):
            raise ValueError(
                f"{REGISTRY_NAME} expects the action as a tensor [batch, chunk, action_dim] or [chunk, action_dim]; "
                f"got {type(action).__name__} of shape {tuple(getattr(action, 'shape', ()))}."
            )
        single = action.ndim == 2
        actions = action.detach().to("cpu", torch.float32).numpy()
        if single:
            actions = actions[None]
        self._check_shape(actions.shape)

        complementary = dict(transition.get(TransitionKey.COMPLEMENTARY_DATA) or {})
        step_is_pad = self._step_is_pad(complementary.get(ACTION_IS_PAD_KEY), actions.shape[:2])
        clip = self.clip and self._count_clipped(actions)
        batch = self.layout.build(actions, step_is_pad=step_is_pad, clip=clip, max_length=self.max_tokens)
        if batch.dropped.any():
            self._report_dropped(batch.dropped)

        outputs = {
            ACTION_TOKENS_KEY: batch.ids,
            ACTION_TOKEN_VALID_KEY: batch.valid,
            ACTION_TOKEN_TARGET_KEY: batch.target,
        }
        for key, value in outputs.items():
            complementary[key] = torch.from_numpy(value[0] if single else value).to(action.device)
        new_transition = transition.copy()
        new_transition[TransitionKey.COMPLEMENTARY_DATA] = complementary
        return new_transition

    def _check_shape(self, shape: tuple[int, ...]) -> None:
        _, horizon, dim = shape
        if horizon != self.chunk_size:
            raise ValueError(
                f"{REGISTRY_NAME}: the action chunk has {horizon} steps but chunk_size={self.chunk_size}. Set the "
                "policy's chunk_size (which sets the dataset's action horizon) and this step's chunk_size to the "
                "same value."
            )
        expected = self.fast_tokenizer.action_dim
        if expected is not None and dim != expected:
            raise ValueError(
                f"{REGISTRY_NAME}: the action has {dim} dimensions but the FAST tokenizer was fitted on {expected}. "
                "Fit a tokenizer on this dataset's actions (fastplus-train-tokenizer) and point tokenizer_path at it."
            )

    @staticmethod
    def _step_is_pad(is_pad: Any, shape: tuple[int, ...]) -> np.ndarray | None:
        if is_pad is None:
            return None
        pad = torch.as_tensor(is_pad).detach().cpu().numpy().astype(bool)
        if pad.size != math.prod(shape):
            raise ValueError(
                f"{REGISTRY_NAME}: {ACTION_IS_PAD_KEY} has shape {pad.shape}, expected {tuple(shape)} (one flag "
                "per action step)."
            )
        return pad.reshape(shape)

    def _warning_due(self, last: str) -> bool:
        """Rate limit: True (and the time noted in attribute ``last``) when that warning last fired at least
        ``CLIP_WARNING_INTERVAL_S`` ago."""
        now = time.monotonic()
        if now - getattr(self, last) < CLIP_WARNING_INTERVAL_S:
            return False
        setattr(self, last, now)
        return True

    def _count_clipped(self, actions: np.ndarray) -> bool:
        """Count the coefficients that must be clipped and warn (rate-limited); True when there are any."""
        per_chunk = self.layout.out_of_range(actions)
        n_clipped = int(per_chunk.sum())
        if n_clipped == 0:
            return False
        self._clipped_coefficients += n_clipped
        self._clipped_chunks += int((per_chunk > 0).sum())
        if self._warning_due("_last_clip_warning"):
            logger.warning(
                "%s: clipped %d of %d DCT coefficients in %d of %d action chunks of this batch (%d coefficients in "
                "%d chunks since start; this warning repeats at most every %.0f s). Frequent clipping means the "
                "tokenizer does not fit this data: refit it on these normalised actions, or check the "
                "normalisation statistics.",
                REGISTRY_NAME,
                n_clipped,
                actions.size,
                int((per_chunk > 0).sum()),
                actions.shape[0],
                self._clipped_coefficients,
                self._clipped_chunks,
                CLIP_WARNING_INTERVAL_S,
            )
        return True

    def _report_dropped(self, dropped: np.ndarray) -> None:
        """Count the sub-chunks left out for lack of room and warn (rate-limited)."""
        self._dropped_subchunks += int(dropped.sum())
        if self._warning_due("_last_drop_warning"):
            logger.warning(
                "%s: %d action chunk(s) of this batch need more than max_tokens=%d tokens; their last %s sub-chunk(s) "
                "were left out of the training targets (%d sub-chunks since start; this warning repeats at most every "
                "%.0f s). Raise the policy's max_action_tokens, or refit the FAST tokenizer with a larger vocab_size.",
                REGISTRY_NAME,
                int((dropped > 0).sum()),
                self.max_tokens,
                "/".join(str(n) for n in sorted(set(dropped[dropped > 0].tolist()))),
                self._dropped_subchunks,
                CLIP_WARNING_INTERVAL_S,
            )

    def get_config(self) -> dict[str, Any]:
        return {
            "tokenizer_path": self.tokenizer_path,
            "tokenizer": self.fast_tokenizer.to_dict(),
            "chunk_size": self.chunk_size,
            "split_every": self.split_every,
            "max_tokens": self.max_tokens,
            "clip": self.clip,
        }

    def transform_features(
        self, features: dict[PipelineFeatureType, dict[str, PolicyFeature]]
    ) -> dict[PipelineFeatureType, dict[str, PolicyFeature]]:
        """Unchanged: the tokens are training targets in complementary data, not observation or action
        features, and their length varies per batch; policy features describe model inputs and outputs."""
        return features
