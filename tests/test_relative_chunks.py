"""Relative action chunks, as the tokenizer tools read them, on the synthetic reach dataset: the actions move and
depend on the task text, and ``--relative_actions=true`` chunks equal what LeRobot's relative-action and normaliser
steps feed a policy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lerobot.configs import FeatureType, NormalizationMode, PolicyFeature
from lerobot.datasets import LeRobotDataset
from lerobot.datasets.dataset_tools import recompute_stats
from lerobot.processor import (
    NormalizerProcessorStep,
    RelativeActionsProcessorStep,
    TransitionKey,
    create_transition,
)
from lerobot.utils.constants import ACTION, OBS_STATE

from lerobot_fastplus.data.chunks import load_action_chunks, split_into_subchunks
from testing_support.synthetic_dataset import REACH_TARGETS, make_synthetic_dataset, reach_task

CHUNK = 20
# every joint relative, the gripper too (LeRobot's default keeps it absolute; the reach task moves it steadily)
RELATIVE_EXCLUDE_JOINTS: list[str] = []


@pytest.fixture(scope="module")
def reach(tmp_path_factory) -> LeRobotDataset:
    """A small reach dataset with relative-action statistics."""
    root = tmp_path_factory.mktemp("reach") / "dataset"
    dataset = make_synthetic_dataset(root, repo_id="local/reach", n_episodes=8, episode_len=50, reach_targets=4)
    return recompute_stats(
        dataset, relative_action=True, relative_exclude_joints=RELATIVE_EXCLUDE_JOINTS, chunk_size=CHUNK
    )


def test_reach_actions_move_and_depend_on_the_named_marker_only(reach) -> None:
    table = reach.hf_dataset.data.to_pandas()
    tasks = reach.meta.tasks.index.tolist()
    assert sorted(tasks) == sorted(reach_task(t) for t in REACH_TARGETS)
    relative = {}
    for episode, rows in table.groupby("episode_index"):
        actions, states = np.stack(rows["action"]), np.stack(rows["observation.state"])
        relative[episode] = actions[10:30] - states[10]  # one chunk relative to the state at its start
        assert np.abs(relative[episode][-1]).max() > 5  # moves several degrees within a chunk: holding still fails
        target = REACH_TARGETS[episode % 4]
        image = reach[int(rows.index[0])]["observation.images.front"]
        x, y = (image.shape[-1] - 2 if s > 0 else 1 for s in target.direction[:2])
        assert torch.allclose(image[:, y, x] * 255, torch.tensor(target.colour, dtype=torch.float32), atol=1)
    for episode in range(4):  # same marker, another start pose: the same relative motion (up to sensor noise)
        np.testing.assert_allclose(relative[episode], relative[episode + 4], atol=0.5)
        assert np.abs(relative[episode] - relative[(episode + 1) % 4]).max() > 5


def test_relative_tokenizer_chunks_are_exactly_what_lerobot_feeds_the_policy(reach) -> None:
    """With --relative_actions=true the tokenizer tools' chunks equal LeRobot's RelativeActionsProcessorStep +
    NormalizerProcessorStep applied to the training samples (what pi05_ki's preprocessor runs before its FAST
    step), and the tokenizer is fitted on their sub-chunks."""
    chunks = load_action_chunks(
        reach, CHUNK, mode="QUANTILES", relative_exclude_joints=RELATIVE_EXCLUDE_JOINTS, show_progress=False
    )
    names = reach.meta.features[ACTION]["names"]
    relative = RelativeActionsProcessorStep(enabled=True, exclude_joints=RELATIVE_EXCLUDE_JOINTS, action_names=names)
    normalize = NormalizerProcessorStep(
        features={ACTION: PolicyFeature(FeatureType.ACTION, (6,))},
        norm_map={FeatureType.ACTION: NormalizationMode.QUANTILES},
        stats={ACTION: reach.meta.stats[ACTION]},
    )
    samples = LeRobotDataset(
        "local/reach", root=reach.root, delta_timestamps={ACTION: [i / reach.fps for i in range(CHUNK)]}
    )
    for index in (0, 17, 30, 200):
        sample = samples[index]
        transition = create_transition(
            observation={OBS_STATE: sample[OBS_STATE][None]}, action=sample[ACTION][None].clone()
        )
        expected = normalize(relative(transition))[TransitionKey.ACTION][0].numpy()
        row = np.flatnonzero(
            (chunks.episode_index == int(sample["episode_index"])) & (chunks.start_frame == index % 50)
        )
        np.testing.assert_allclose(chunks.normalized[row[0]], expected, atol=1e-5)
    assert np.abs(chunks.normalized).max() < 1.5  # the relative statistics fit the relative chunks

    subchunks = split_into_subchunks(chunks, 10)
    assert subchunks.normalized.shape == (2 * len(chunks.raw), 10, 6)
    np.testing.assert_array_equal(subchunks.normalized[1], chunks.normalized[0, 10:])
