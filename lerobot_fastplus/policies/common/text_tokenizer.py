"""A local stand-in for the gated PaliGemma text tokenizer, for offline tests and CPU experiments.

Every pi0-family config here takes ``text_tokenizer_name`` (a hub id or a local directory). The real
PaliGemma tokenizer needs a gated download; this writes a word-level tokenizer with PaliGemma's id layout
instead: ``<pad>=0 <eos>=1 <bos>=2 <unk>=3``, 257,152 ids, ``<loc0000..1023>`` at 256000 (where FAST ids
land) and ``<seg000..127>`` at 257024 (where the action BOS/SPLIT/EOS live). A BOS is prepended like
PaliGemma's. Words outside its small vocabulary become ``<unk>``: fine for tests, useless for real training.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from lerobot_fastplus.policies.common.backbone import PALIGEMMA_VOCAB_SIZE

N_TEXT_IDS = 256000
N_LOC = 1024
N_SEG = PALIGEMMA_VOCAB_SIZE - N_TEXT_IDS - N_LOC  # 128
SPECIAL = ["<pad>", "<eos>", "<bos>", "<unk>"]
# The pi0.5 prompt skeleton ("Task: ..., State: 12 250;\nAction: ") and the 256 state bins.
PROMPT_WORDS = ["Task", "State", "Action", ":", ",", ";", ".", "-", "|", *map(str, range(256))]


def write_paligemma_layout_tokenizer(path: str | os.PathLike, words: Iterable[str] = ()) -> Path:
    """Save a word-level tokenizer with PaliGemma's id layout to ``path``; returns the directory.

    ``words`` (e.g. the task descriptions' words) get their own ids after the prompt skeleton.
    """
    vocab: dict[str, int] = {}
    for token in [*SPECIAL, *PROMPT_WORDS, *words]:
        vocab.setdefault(token, len(vocab))
    if len(vocab) > N_TEXT_IDS:
        raise ValueError(f"{len(vocab)} words do not fit into the {N_TEXT_IDS} text ids of the PaliGemma layout.")
    vocab.update({f"<unused{i}>": i for i in range(len(vocab), N_TEXT_IDS)})
    vocab.update({f"<loc{i:04d}>": N_TEXT_IDS + i for i in range(N_LOC)})
    vocab.update({f"<seg{i:03d}>": N_TEXT_IDS + N_LOC + i for i in range(N_SEG)})

    model = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    model.pre_tokenizer = pre_tokenizers.Whitespace()
    model.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=model, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
    out = Path(path)
    tokenizer.save_pretrained(out)
    return out


def write_dataset_words_tokenizer(dataset_root: str | os.PathLike, path: str | os.PathLike) -> Path:
    """``write_paligemma_layout_tokenizer`` with every word of a local LeRobotDataset's task texts
    (``meta/tasks.parquet``); returns the directory."""
    import pandas as pd

    tasks = pd.read_parquet(Path(dataset_root) / "meta" / "tasks.parquet").index
    split = pre_tokenizers.Whitespace()
    return write_paligemma_layout_tokenizer(
        path, sorted({w for task in tasks for w, _ in split.pre_tokenize_str(task)})
    )
