"""Encode-train-decode end to end: a tiny pi0_fast memorises four chunks and ``select_action`` replays them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lerobot.policies.factory import make_pre_post_processors
from pi0_fast_helpers import CAMERA, CHUNK, make_assets, make_config, raw_batch

from lerobot_fastplus.policies.pi0_fast.modeling_pi0_fast import PI0FastPolicy

MAX_STEPS = 300


@pytest.mark.slow  # ~15 s on an idle 2-core machine, several times that under load
def test_a_tiny_model_reproduces_a_handful_of_chunks_through_select_action(tmp_path) -> None:
    assets = make_assets(tmp_path)
    torch.manual_seed(0)
    config = make_config(assets, camera=False)
    policy = PI0FastPolicy(config)
    pre, post = make_pre_post_processors(config, dataset_stats=assets.stats)
    raw = raw_batch(4, seed=0)
    raw.pop(CAMERA)  # the four prompts differ by their state bins
    batch = pre(raw)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=3e-3, weight_decay=0.0)
    policy.train()
    for _ in range(MAX_STEPS):
        loss, logs = policy.forward(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if logs["token_accuracy"] == 1.0 and logs["ce_loss"] < 0.05:
            break
    assert logs["token_accuracy"] == 1.0, f"not memorised in {MAX_STEPS} steps: {logs}"

    observation = pre({k: v for k, v in raw.items() if k not in ("action", "action_is_pad")})
    policy.reset()
    replay = torch.stack([post(policy.select_action(observation)) for _ in range(CHUNK)], dim=1).numpy()
    assert policy.last_decode.n_incomplete == 0
    # exactly the FAST round trip of the targets (every token right), hence close to the recorded actions
    targets = raw["action"].numpy()
    layout = policy.layout
    round_trip = layout.parse(layout.build(targets).ids, action_dim=targets.shape[-1]).actions
    np.testing.assert_allclose(replay, round_trip, atol=1e-5)
    assert np.abs(replay - targets).max() < 0.1
