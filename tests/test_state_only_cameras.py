"""pi05_ki and pi0_fast on state-only data: a prompt-only prefix without camera, blank masked images with
``empty_cameras``, and still core's error when a real camera is missing from the batch (tiny variant, CPU)."""

from __future__ import annotations

from typing import Any

import ki_helpers
import pi0_fast_helpers
import pytest
import torch
from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.policies.factory import make_pre_post_processors
from policy_helpers import CAMERA, CHUNK, DIM, raw_batch

from lerobot_fastplus.policies.pi0_fast.modeling_pi0_fast import PI0FastPolicy
from lerobot_fastplus.policies.pi05_ki.modeling_pi05_ki import PI05KIPolicy

POLICIES = {"pi05_ki": (ki_helpers, PI05KIPolicy), "pi0_fast": (pi0_fast_helpers, PI0FastPolicy)}


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Any]:
    return {name: helpers.make_assets(tmp_path_factory.mktemp(name)) for name, (helpers, _) in POLICIES.items()}


def state_only_policy(assets, name: str, empty_cameras: int) -> tuple[Any, Any]:
    """A policy whose dataset has state and action only, with LeRobot's feature validation applied."""
    helpers, policy_class = POLICIES[name]
    assets = assets[name]
    config = helpers.make_config(assets, empty_cameras=empty_cameras)
    config.input_features = {"observation.state": PolicyFeature(FeatureType.STATE, (DIM,))}
    config.output_features = {"action": PolicyFeature(FeatureType.ACTION, (DIM,))}
    config.validate_features()
    torch.manual_seed(0)
    return policy_class(config), make_pre_post_processors(config, dataset_stats=assets.stats)[0]


@pytest.mark.parametrize("empty_cameras", [0, 1], ids=["prompt_only", "empty_camera"])
@pytest.mark.parametrize("name", list(POLICIES))
def test_state_only_policy_trains_and_predicts(assets, name, empty_cameras) -> None:
    policy, pre = state_only_policy(assets, name, empty_cameras)
    assert len(policy.config.image_features) == empty_cameras
    raw = raw_batch(2, seed=3)
    raw.pop(CAMERA)
    batch = pre(raw)
    images, masks = policy._preprocess_images(batch)
    assert len(images) == empty_cameras and all(not m.any() for m in masks)
    assert all(bool((image == -1).all()) for image in images)

    loss, _ = policy.forward(batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.parameters())
    for key in ("action", "action_is_pad"):
        raw.pop(key)
    policy.eval()
    with torch.no_grad():
        chunk = policy.predict_action_chunk(pre(raw))
    assert chunk.shape == (2, CHUNK, DIM) and torch.isfinite(chunk).all()


@pytest.mark.parametrize("name", list(POLICIES))
def test_a_real_camera_missing_from_the_batch_is_still_an_error(assets, name) -> None:
    helpers, policy_class = POLICIES[name]
    assets = assets[name]
    config = helpers.make_config(assets)
    torch.manual_seed(0)
    policy = policy_class(config)
    raw = raw_batch(2, seed=3, with_action=False)
    raw.pop(CAMERA)
    batch = make_pre_post_processors(config, dataset_stats=assets.stats)[0](raw)
    with pytest.raises(ValueError, match="All image features are missing from the batch"):
        policy._preprocess_images(batch)
