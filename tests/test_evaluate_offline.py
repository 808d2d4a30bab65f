"""``fastplus-eval-offline``: held-out action error of a saved checkpoint (tiny pi05_ki, CPU, offline)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from lerobot.policies import make_policy, make_pre_post_processors

from lerobot_fastplus.data.chunks import load_action_chunks
from lerobot_fastplus.evaluation.offline import EvalOfflineConfig, evaluate_checkpoint, pick_frames
from lerobot_fastplus.fast import FastTokenizer
from lerobot_fastplus.policies.common import write_paligemma_layout_tokenizer
from lerobot_fastplus.policies.pi05_ki.configuration_pi05_ki import PI05KIConfig
from lerobot_fastplus.tools import evaluate_offline
from testing_support.synthetic_dataset import TASK, make_synthetic_dataset

REPO_ID = "local/eval_offline"
CHUNK, N_STEPS, EPISODE_LEN = 10, 5, 30


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A synthetic dataset and a randomly initialised tiny pi05_ki saved as a checkpoint with its processors."""
    tmp = tmp_path_factory.mktemp("eval_offline")
    dataset = make_synthetic_dataset(tmp / "data", repo_id=REPO_ID, n_episodes=3, episode_len=EPISODE_LEN)
    chunks = load_action_chunks(dataset, CHUNK, show_progress=False)
    config = PI05KIConfig(
        paligemma_variant="gemma_tiny",
        action_expert_variant="gemma_tiny",
        device="cpu",
        image_resolution=(64, 64),
        tokenizer_max_length=48,
        chunk_size=CHUNK,
        n_action_steps=N_STEPS,
        max_action_tokens=64,
        text_tokenizer_name=str(write_paligemma_layout_tokenizer(tmp / "text", TASK.split())),
        fast_tokenizer_path=str(FastTokenizer.fit(chunks.normalized, vocab_size=512).save(tmp / "fast")),
    )
    policy = make_policy(config, ds_meta=dataset.meta)
    pre, post = make_pre_post_processors(config, dataset_stats=dataset.meta.stats)
    ckpt = tmp / "pretrained_model"
    for part in (policy, pre, post):
        part.save_pretrained(ckpt)
    return dataset, ckpt


def test_every_decoding_is_scored_on_complete_held_out_chunks(saved) -> None:
    dataset, ckpt = saved
    result = evaluate_checkpoint(EvalOfflineConfig(checkpoint=str(ckpt), root=str(dataset.root), episodes=[2]))
    assert [d.name for d in result.decodings] == ["flow", "fast (AR)", "hold current state", "range centre"]
    assert result.episodes == [2] and result.n_action_steps == N_STEPS
    # the episode has EPISODE_LEN - N_STEPS + 1 frames with a complete chunk; all fit under the default 48
    assert len(result.frames) == EPISODE_LEN - N_STEPS + 1

    # the baseline and ground truth, recomputed from the parquet rows
    table = dataset.hf_dataset.data.to_pandas()
    episode = table[table["episode_index"] == 2].sort_values("frame_index")
    actions, states = np.stack(episode["action"]), np.stack(episode["observation.state"])
    truth = np.stack([actions[f : f + N_STEPS] for f in range(len(result.frames))])
    hold = np.repeat(states[: len(result.frames), None], N_STEPS, axis=1)
    np.testing.assert_allclose(result.ground_truth, truth, rtol=1e-6)
    assert result.result("hold current state").mse_original == pytest.approx(np.mean((hold - truth) ** 2), rel=1e-6)
    # predicting 0 in normalised space: the middle of the q01..q99 range (absolute actions)
    stats = dataset.meta.stats["action"]
    centre = np.broadcast_to((stats["q01"] + stats["q99"]) / 2, truth.shape)
    np.testing.assert_allclose(result.result("range centre").predictions, centre, rtol=1e-5)
    assert result.result("range centre").mse_normalized > 0

    for d in result.decodings[:2]:
        assert d.predictions.shape == truth.shape and np.isfinite(d.predictions).all()
        assert d.ms_per_chunk > 0 and np.isfinite(d.mse_normalized)
    assert 0 <= result.result("fast (AR)").incomplete_chunks <= len(result.frames)
    assert result.result("flow").incomplete_chunks is None


def test_the_cli_writes_json_and_plot_and_is_repeatable(saved, tmp_path, capsys) -> None:
    dataset, ckpt = saved
    outputs = []
    for name in ("a", "b"):
        args = [f"--checkpoint={ckpt}", f"--root={dataset.root}", "--episodes=[1]", "--n_frames=4"]
        assert evaluate_offline.main([*args, f"--output_dir={tmp_path / name}"]) == 0
        assert (tmp_path / name / "eval_offline.png").stat().st_size > 0
        outputs.append(json.loads((tmp_path / name / "eval_offline.json").read_text()))
    assert "hold current state" in capsys.readouterr().out
    for first, second in zip(outputs[0]["decodings"], outputs[1]["decodings"], strict=True):
        assert first["mse_normalized"] == second["mse_normalized"]  # same seed, same flow noise
    assert len(outputs[0]["frames"]) == 4


def test_missing_arguments_and_unknown_episodes_are_refused(saved, capsys) -> None:
    dataset, ckpt = saved
    assert evaluate_offline.main([f"--root={dataset.root}"]) == 2
    assert "--checkpoint" in capsys.readouterr().err
    assert evaluate_offline.main([f"--checkpoint={ckpt}", f"--root={dataset.root}", "--episodes=[7]"]) == 2
    assert "episodes 0..2" in capsys.readouterr().err


def test_frames_are_evenly_spaced_and_never_cross_an_episode_end(saved) -> None:
    dataset, _ = saved
    frames = pick_frames(dataset, horizon=EPISODE_LEN, n_frames=10)
    assert frames == [0, EPISODE_LEN, 2 * EPISODE_LEN]  # only the first frame of each episode holds 30 actions
