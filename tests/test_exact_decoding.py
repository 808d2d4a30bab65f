"""Both autoregressive decoders (pi0_fast and pi05_ki's FAST head) under the exact grammar, with random weights:
every decoded chunk is complete, finite and inside the tokenizer's range, and no sequence is longer than the bound;
with the old token-type grammar the same decoders produce incomplete chunks (the guard)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import fit_reference, real_action_chunks
from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.policies.factory import make_pre_post_processors
from lerobot.utils.constants import OBS_LANGUAGE_ATTENTION_MASK, OBS_LANGUAGE_TOKENS
from token_type_grammar import TokenTypeGrammar

from lerobot_fastplus.fast import FastTokenizer
from lerobot_fastplus.policies.common import write_paligemma_layout_tokenizer
from lerobot_fastplus.policies.pi0_fast.configuration_pi0_fast import PI0FastConfig
from lerobot_fastplus.policies.pi0_fast.modeling_pi0_fast import PI0FastPolicy
from lerobot_fastplus.policies.pi05_ki.configuration_pi05_ki import PI05KIConfig
from lerobot_fastplus.policies.pi05_ki.modeling_pi05_ki import PI05KIPolicy

CHUNK, SPLIT, RES, BATCH = 20, 10, 32, 4
TASK = "pick the bottle"
CAMERA = "observation.images.cam"


TOKENIZERS = {
    # name: (dataset, quantiles, vocab, fitted by the reference)
    "so101-ours": ("so101_record_test", "stats", 1024, False),
    "so101-reference": ("so101_record_test", "stats", 1024, True),
    "g1-ours": ("g1_bottle_pick", "stats", 2048, False),
}


@pytest.fixture(
    scope="module",
    params=[pytest.param(name, marks=() if name == "so101-ours" else pytest.mark.slow) for name in TOKENIZERS],
)
def assets(request, tmp_path_factory):
    dataset, quantiles, vocab, by_reference = TOKENIZERS[request.param]
    chunks = real_action_chunks(dataset, SPLIT, stride=3, quantiles=quantiles)
    root = tmp_path_factory.mktemp(request.param)
    fast_dir = root / "fast"
    if by_reference:
        fit_reference(chunks, vocab, fast_dir)
    else:
        FastTokenizer.fit(chunks, vocab_size=vocab).save(fast_dir)
    dim = chunks.shape[2]
    ones = np.ones(dim, dtype=np.float32)
    stat = {"q01": -ones, "q99": ones, "mean": 0 * ones, "std": ones, "min": -ones, "max": ones}
    stats = {key: {k: torch.tensor(v) for k, v in stat.items()} for key in ("action", "observation.state")}
    text_dir = write_paligemma_layout_tokenizer(root / "text", TASK.split())
    return {"fast": str(fast_dir), "text": str(text_dir), "stats": stats, "dim": dim}


def build(kind: str, assets: dict, **overrides):
    common = {
        "device": "cpu",
        "paligemma_variant": "gemma_tiny",
        "chunk_size": CHUNK,
        "n_action_steps": CHUNK,
        "split_every": SPLIT,
        "image_resolution": (RES, RES),
        "tokenizer_max_length": 16,
        "text_tokenizer_name": assets["text"],
        "max_action_tokens": 1024,
    }
    if kind == "pi0_fast":
        config = PI0FastConfig(**common, action_tokenizer_name=assets["fast"], **overrides)
    else:
        config = PI05KIConfig(
            **common, action_expert_variant="gemma_tiny", fast_tokenizer_path=assets["fast"], **overrides
        )
    dim = assets["dim"]
    config.input_features = {
        CAMERA: PolicyFeature(FeatureType.VISUAL, (3, RES, RES)),
        "observation.state": PolicyFeature(FeatureType.STATE, (dim,)),
    }
    config.output_features = {"action": PolicyFeature(FeatureType.ACTION, (dim,))}
    return (PI0FastPolicy if kind == "pi0_fast" else PI05KIPolicy)(config)


def observation(policy, assets: dict, seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    raw = {
        CAMERA: torch.rand(BATCH, 3, RES, RES, generator=gen),
        "observation.state": torch.rand(BATCH, assets["dim"], generator=gen) * 2 - 1,
        "task": [TASK] * BATCH,
    }
    return make_pre_post_processors(policy.config, dataset_stats=assets["stats"])[0](raw)


def decode(policy, obs: dict, grammar, temperature: float, seed: int) -> torch.Tensor:
    images, img_masks = policy._preprocess_images(obs)
    tokens, masks = obs[OBS_LANGUAGE_TOKENS], obs[OBS_LANGUAGE_ATTENTION_MASK]
    generator = torch.Generator().manual_seed(seed)
    if isinstance(policy, PI0FastPolicy):
        return policy.model.generate(
            images, img_masks, tokens, masks, grammar, temperature=temperature, generator=generator
        )
    return policy.model.decode_fast(
        images, img_masks, tokens, masks, grammar, temperature=temperature, generator=generator
    )


def parse(policy, candidates: torch.Tensor):
    n = policy.layout.n_fast_ids
    local = np.where(candidates.numpy() < n, candidates.numpy(), candidates.numpy() + 1)
    return policy.layout.parse(local, action_dim=policy.config.output_features["action"].shape[0])


@pytest.mark.parametrize("kind", ["pi0_fast", "pi05_ki"])
def test_random_weights_always_decode_complete_in_range_chunks(assets, kind) -> None:
    torch.manual_seed(0)
    policy = build(kind, assets)
    policy.eval()
    bound = policy.grammar.max_length
    assert policy.max_decoding_steps == bound  # the default limit is the grammar's bound
    for seed in (0, 1):
        obs = observation(policy, assets, seed)
        for temperature in (0.0, 1.0):
            candidates = decode(policy, obs, policy.grammar, temperature, seed)
            assert candidates.shape[0] == BATCH and candidates.shape[1] <= bound
            parsed = parse(policy, candidates)
            assert parsed.step_valid.all() and parsed.ended.all(), parsed.reasons
            assert np.isfinite(parsed.actions).all()
            assert (policy.layout.out_of_range(parsed.actions) == 0).all()  # re-encodes inside the range
    # through predict_action_chunk, as lerobot-eval / lerobot-rollout call it
    if kind == "pi05_ki":
        policy.config.action_decoding = "fast"
    chunk = policy.predict_action_chunk(observation(policy, assets, 5))
    assert torch.isfinite(chunk).all() and policy.last_decode.n_incomplete == 0


@pytest.mark.parametrize("kind", ["pi0_fast", "pi05_ki"])
def test_the_token_type_grammar_left_chunks_incomplete(assets, kind) -> None:
    """Guard: the same random-weight decoders under the grammar the project used before lose sub-chunks, so the
    property above is not a consequence of the weights or the data."""
    torch.manual_seed(0)
    policy = build(kind, assets)
    policy.eval()
    old = TokenTypeGrammar(policy.layout.n_fast_ids, policy.layout.n_subchunks, policy.grammar.max_length)
    incomplete = 0
    for seed in (0, 1):
        parsed = parse(policy, decode(policy, observation(policy, assets, seed), old, 1.0, seed))
        incomplete += int((~parsed.step_valid).any(axis=1).sum())
    assert incomplete > 0


def test_a_step_limit_below_the_bound_is_refused_with_the_bound(assets) -> None:
    torch.manual_seed(0)
    bound = build("pi0_fast", assets).grammar.max_length
    for kind in ("pi0_fast", "pi05_ki"):
        with pytest.raises(ValueError, match=rf"max_decoding_steps={bound - 1} is below {bound}"):
            build(kind, assets, max_decoding_steps=bound - 1)
        assert build(kind, assets, max_decoding_steps=bound + 5).max_decoding_steps == bound + 5
