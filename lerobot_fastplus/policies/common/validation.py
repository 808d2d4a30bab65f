"""Checks of the pi0-family policies against their dataset and FAST tokenizer, with errors that name the fix, and
a draccus hook that lets config errors reach the command line.

The config dataclasses check their own fields at parse time. What a config cannot know before LeRobot has opened
the dataset (is there an action? a camera? does the FAST tokenizer fit the action dimension and ``split_every``?)
is checked here when the policy is built, before its model is allocated and before anything is written.

Why the draccus hook: LeRobot parses ``lerobot-train`` / ``lerobot-eval`` / ``lerobot-rollout`` flags with draccus,
which turns any ``ValueError`` or ``TypeError`` raised while building a config dataclass (e.g. in
``__post_init__``) into ``Couldn't instantiate class PI0FastConfig using the given arguments.``, and LeRobot prints
only that line: every validation message (an RTC config on pi0_fast, ``split_every`` larger than ``chunk_size``,
...) would be lost. :func:`show_config_errors_on_the_cli` wraps draccus' dataclass decoder so that this line ends
with the reason (the original exception stays chained as ``__cause__``). Only the text of that parse error
changes, for every config class; installing it never raises (it runs while LeRobot registers the plugin).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lerobot.configs import PreTrainedConfig
from lerobot.utils.constants import ACTION

from lerobot_fastplus.fast.tokenizer import FastTokenizer

logger = logging.getLogger(__name__)

_MARK = "_fastplus_shows_reason"
DEFAULT_SPLIT_EVERY = 10  # steps per FAST sub-chunk when a config leaves split_every unset
CHECKPOINT_TOKENIZER = "the checkpoint's FAST tokenizer (its fast_tokenizer/ folder)"


def require_action_feature(config: PreTrainedConfig, policy_type: str) -> None:
    """Refuse a dataset without an ``action`` feature (LeRobot would otherwise invent a padded one)."""
    if ACTION not in config.output_features:
        features = ", ".join(sorted(config.input_features)) or "none"
        raise ValueError(
            f"{policy_type} learns to predict the '{ACTION}' feature, but the dataset has none (its features: "
            f"{features}). Train on a dataset recorded with actions (lerobot-record writes an '{ACTION}' column), "
            "or add one."
        )


def resolve_split_every(split_every: int | None, chunk_size: int) -> int:
    """``split_every`` as given, or by default ``DEFAULT_SPLIT_EVERY`` steps, capped at ``chunk_size`` so that a
    short chunk needs no extra flag (an explicit value larger than ``chunk_size`` is still refused)."""
    return min(DEFAULT_SPLIT_EVERY, chunk_size) if split_every is None else split_every


def load_fast_tokenizer(path: str, flag: str) -> FastTokenizer:
    """``FastTokenizer.load(path)``; its error names the flag that set ``path``."""
    try:
        return FastTokenizer.load(path)
    except (ValueError, OSError) as err:
        raise ValueError(f"{flag}={path}: {err}") from err


def check_fast_tokenizer_path_when_parsed(config: PreTrainedConfig, path: str, flag: str) -> None:
    """Load the FAST tokenizer ``path`` (set by ``flag``) while the flags are parsed when it is an existing local
    path, so that a folder that holds none (the tokenizer tool's output folder instead of its ``tokenizer/``, a text
    tokenizer, ...) is refused in the one line LeRobot prints, before it opens the dataset.

    Only for a config without features (flags, a training config file): a checkpoint's ``config.json`` has them and
    the policy then uses the checkpoint's own copy of the tokenizer, wherever ``path`` pointed when it was trained.
    A path that does not exist (yet: the ready configs name one to fit) or a hub id is left to the policy, which
    loads it when it is built.
    """
    if config.output_features or not path or not Path(path).expanduser().exists():
        return
    load_fast_tokenizer(path, flag)


def check_fast_tokenizer(
    tokenizer: FastTokenizer,
    *,
    source: str,
    flag: str,
    action_dim: int | None,
    chunk_size: int,
    split_every: int | None,
) -> None:
    """The tokenizer (``source`` says where it came from) must be fitted on ``action_dim``-D actions and, unless
    ``split_every`` is None, on sub-chunks of ``split_every`` steps; ``flag`` is the flag that selects another
    tokenizer. Shape fields the tokenizer leaves unset (the published FAST+) pass."""
    refit = f"fastplus-train-tokenizer --root=<dataset> --output_dir=<dir>, then {flag}=<dir>/tokenizer"
    if tokenizer.action_dim is not None and action_dim is not None and tokenizer.action_dim != action_dim:
        raise ValueError(
            f"{source} was fitted on {tokenizer.action_dim}-D actions, but the dataset's '{ACTION}' has {action_dim} "
            f"dimensions. Fit a tokenizer on this dataset: {refit}."
        )
    horizon = tokenizer.time_horizon
    if split_every is None or horizon is None or horizon == split_every:
        return
    if horizon <= chunk_size:
        layout_fix = f"set --policy.split_every={horizon}"
    else:
        layout_fix = f"raise --policy.chunk_size to at least {horizon} and set --policy.split_every={horizon}"
    raise ValueError(
        f"{source} was fitted on {horizon}-step chunks, but split_every={split_every} cuts each {chunk_size}-step "
        f"action chunk into {split_every}-step sub-chunks, whose coefficients it was not fitted on (longer token "
        f"sequences, clipping). Either {layout_fix}, or fit a tokenizer on {split_every}-step chunks: "
        f"{refit.replace('--output_dir', f'--horizon={split_every} --output_dir')}."
    )


def policy_fast_tokenizer(
    config: PreTrainedConfig, path: str, flag: str, given: FastTokenizer | None, split_every: int | None
) -> FastTokenizer:
    """The FAST tokenizer of a policy: ``given`` (a checkpoint's copy, which keeps the pairing it was trained with)
    or a new one loaded from ``path`` (set by ``flag``), checked against the dataset's action dimension and, for a
    new one, ``split_every`` (None skips that check)."""
    fresh = given is None
    tokenizer = load_fast_tokenizer(path, flag) if fresh else given
    action = config.output_features.get(ACTION)
    check_fast_tokenizer(
        tokenizer,
        source=f"the FAST tokenizer {flag}={path}" if fresh else CHECKPOINT_TOKENIZER,
        flag=flag,
        action_dim=action.shape[0] if action is not None else None,
        chunk_size=config.chunk_size,
        split_every=split_every if fresh else None,
    )
    return tokenizer


def _with_reason(decode_dataclass: Callable[..., Any]) -> Callable[..., Any]:
    from draccus.utils import ParsingError

    @functools.wraps(decode_dataclass)
    def decode(cls: type, d: dict[str, Any], path: Sequence[str] = ()) -> Any:
        try:
            return decode_dataclass(cls, d, path)
        except ParsingError as err:
            cause = err.__cause__
            if type(err) is not ParsingError or not isinstance(cause, TypeError | ValueError) or hasattr(err, _MARK):
                raise
            shown = ParsingError(f"{err} {type(cause).__name__}: {cause}")
            setattr(shown, _MARK, True)  # an enclosing config re-raises it unchanged
            raise shown from cause

    setattr(decode, _MARK, True)
    return decode


def show_config_errors_on_the_cli() -> None:
    """Install the draccus wrapper (idempotent); on any problem log it and leave draccus as it is."""
    try:
        from draccus.parsers import decoding

        if not getattr(decoding.decode_dataclass, _MARK, False):
            decoding.decode_dataclass = _with_reason(decoding.decode_dataclass)
    except Exception:  # registration must never raise (see lerobot_fastplus/__init__.py)
        logger.warning("lerobot_fastplus: could not make config errors visible on the command line", exc_info=True)
