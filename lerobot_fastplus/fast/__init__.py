"""FAST action tokenizer (a transform along time, DCT by default, + scale/round + byte-level BPE) and the
BOS/SPLIT/EOS layout.

Plain numpy/scipy/tokenizers: no torch here. The bottom layer: imports nothing else of ``lerobot_fastplus``.
"""

from lerobot_fastplus.fast.split_layout import LayoutBatch, ParsedActions, SplitLayout
from lerobot_fastplus.fast.tokenizer import DecodeResult, FastTokenizer

__all__ = ["DecodeResult", "FastTokenizer", "LayoutBatch", "ParsedActions", "SplitLayout"]
