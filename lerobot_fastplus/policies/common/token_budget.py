"""Before training starts: do the dataset's action chunks fit into ``max_action_tokens``?

During training a chunk whose split-layout sequence is too long only loses its last sub-chunks from the targets
(counted and warned about by the FAST processor step), so a long run never aborts on one chunk. A budget too small
for much of the data would still quietly weaken training, so when LeRobot builds the policy for a dataset
(``make_policy`` passes ``dataset_meta``), a sample of its chunks is tokenized exactly as the preprocessor will
(LeRobot's normaliser with ``meta/stats.json``, then the layout) and a budget that the longest one exceeds is refused,
with the numbers, before the first step. Only the action column is read; no video is decoded.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from lerobot.configs import NormalizationMode, PreTrainedConfig

from lerobot_fastplus.data.chunks import load_action_chunks, open_dataset
from lerobot_fastplus.fast.split_layout import SplitLayout

logger = logging.getLogger(__name__)

SAMPLED_CHUNKS = 2000


def check_token_budget(config: PreTrainedConfig, layout: SplitLayout, dataset_meta: Any | None) -> None:
    """Raise ``ValueError`` naming the needed ``max_action_tokens`` when a sampled chunk needs more.

    With relative actions the chunks are taken relative to the state at their first frame, as the policy's
    ``RelativeActionsProcessorStep`` does. Skipped when there is no local dataset or no episode holds a full chunk."""
    if dataset_meta is None or getattr(dataset_meta, "root", None) is None:
        return
    episodes = dataset_meta.episodes
    long_enough = [
        int(ep) for ep, n in zip(episodes["episode_index"], episodes["length"], strict=True) if n >= config.chunk_size
    ]
    if not long_enough:
        return
    mode = config.normalization_mapping.get("ACTION", NormalizationMode.IDENTITY)
    dataset = open_dataset(dataset_meta.root, dataset_meta.repo_id, long_enough)
    stride = max(1, dataset.meta.total_frames // SAMPLED_CHUNKS)
    relative = list(config.relative_exclude_joints) if getattr(config, "use_relative_actions", False) else None
    chunks = load_action_chunks(
        dataset, config.chunk_size, mode=mode, stride=stride, show_progress=False, relative_exclude_joints=relative
    )
    lengths = layout.lengths(chunks.normalized, clip=True)
    longest, budget = int(lengths.max()), config.max_action_tokens
    if longest > budget:
        over = int((lengths > budget).sum())
        raise ValueError(
            f"--policy.max_action_tokens={budget} is too small for this dataset: {over} of {len(lengths)} sampled "
            f"action chunks need more tokens in the split layout (longest {longest}, 99th percentile "
            f"{int(np.percentile(lengths, 99))}, mean {lengths.mean():.1f}). Set --policy.max_action_tokens={longest} "
            "or more, or refit the FAST tokenizer with a larger vocab_size (fewer tokens per chunk). During training "
            "a longer chunk would lose its last sub-chunks from the targets."
        )
    logger.info(
        "max_action_tokens=%d holds all %d sampled action chunks (longest %d tokens, mean %.1f).",
        budget,
        len(lengths),
        longest,
        lengths.mean(),
    )
