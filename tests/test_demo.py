"""``fastplus-demo``, the README's main job: reach dataset -> FAST tokenizer on relative chunks -> ``lerobot-train``
pi05_ki -> held-out evaluation -> summary that leads with the bar check (small settings, CPU, offline)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from cli_helpers import BIN, run
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
from lerobot_fastplus.data.synthetic_dataset import REACH_TARGETS, make_synthetic_dataset, reach_task
from lerobot_fastplus.evaluation.bar_check import check_bar, format_comparison
from lerobot_fastplus.evaluation.offline import DecodingResult, OfflineEvalResult
from lerobot_fastplus.evaluation.training_log import parse_log_line
from lerobot_fastplus.tools import demo

SMALL = [
    "--n_episodes=5",
    "--held_out_episodes=1",
    "--episode_len=40",
    "--image_size=32",
    "--steps=4",
    "--batch_size=2",
    "--eval_frames=4",
]
CHUNK = 20


@pytest.fixture(scope="module")
def reach(tmp_path_factory) -> LeRobotDataset:
    """A small reach dataset with relative-action statistics, as the demo writes it."""
    root = tmp_path_factory.mktemp("reach") / "dataset"
    dataset = make_synthetic_dataset(root, repo_id="local/reach", n_episodes=8, episode_len=50, reach_targets=4)
    return recompute_stats(
        dataset, relative_action=True, relative_exclude_joints=demo.RELATIVE_EXCLUDE_JOINTS, chunk_size=CHUNK
    )


def _evaluation(**mse: float) -> OfflineEvalResult:
    decodings = [
        DecodingResult(name, value, value, 0.0, 0.0, None, None, predictions=np.zeros((1, 1, 1)))
        for name, value in mse.items()
    ]
    return OfflineEvalResult(
        "pi05_ki", "ckpt", "data", [3], [0], 10, "QUANTILES", 0.0, None, decodings, ground_truth=np.zeros((1, 1, 1))
    )


def test_bar_needs_half_the_error_of_holding_still_and_less_than_the_range_centre() -> None:
    checks = check_bar(
        _evaluation(**{"flow": 0.05, "fast (AR)": 0.051, "hold current state": 0.1, "range centre": 0.3})
    )
    assert [(c.name, c.passed) for c in checks] == [("flow", True), ("fast (AR)", False)]
    assert checks[0].limit == pytest.approx(0.05)
    # below half of hold is not enough when the range centre is better still
    (flow,) = check_bar(_evaluation(flow=0.2, **{"hold current state": 0.5, "range centre": 0.2}))
    assert not flow.passed


def test_the_comparison_leads_with_every_decoding_and_says_when_the_bar_is_missed() -> None:
    passed = _evaluation(**{"flow": 0.01, "fast (AR)": 0.02, "hold current state": 0.1, "range centre": 0.3})
    text = format_comparison(passed, check_bar(passed))
    lines = text.splitlines()
    assert lines[0].startswith("Held-out normalised MSE") and "0.5 x hold = 0.0500" in lines[0]
    assert [line.split()[0] for line in lines[1:5]] == ["flow", "FAST", "hold", "range"]
    assert lines[1].endswith("0.0100  PASS") and lines[2].endswith("0.0200  PASS")
    assert lines[-1].startswith("The policy learned the task")

    missed = _evaluation(**{"flow": 0.01, "fast (AR)": 0.09, "hold current state": 0.1, "range centre": 0.3})
    lines = format_comparison(missed, check_bar(missed)).splitlines()
    assert lines[2].endswith("0.0900  MISS")
    assert lines[-1].startswith("MISSED THE BAR: FAST head, autoregressive 0.0900 vs limit 0.0500")


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
        reach, CHUNK, mode="QUANTILES", relative_exclude_joints=demo.RELATIVE_EXCLUDE_JOINTS, show_progress=False
    )
    names = reach.meta.features[ACTION]["names"]
    relative = RelativeActionsProcessorStep(
        enabled=True, exclude_joints=demo.RELATIVE_EXCLUDE_JOINTS, action_names=names
    )
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


def test_log_lines_of_lerobot_train_are_parsed() -> None:
    line = (
        "INFO 2026-11-22 14:22:31 ot_train.py:641 step:50 smpl:400 ep:4 epch:0.20 loss:7.531 grdn:1.636 lr:1.4e-04 "
        "updt_s:0.767 data_s:0.082 smp/s:9 flow_loss:1.540 fast_ce_loss:5.992 fast_token_accuracy:0.039"
    )
    assert parse_log_line(line) == {
        "step": 50,
        "loss": 7.531,
        "flow_loss": 1.54,
        "fast_ce_loss": 5.992,
        "fast_token_accuracy": 0.039,
    }
    assert parse_log_line("INFO ... step:1K smpl:8K loss:2e-3")["step"] == 1000
    assert parse_log_line("Training:  68%|######8   | 41/60 [00:16<00:03,  5.80step/s]") is None


def test_torchcodec_loader_errors_are_folded_to_one_line_in_the_training_log() -> None:
    prefix = "WARNING:lerobot.utils.import_utils:"
    warning = (
        f"{prefix}Could not load libtorchcodec. Likely causes:\n  1. FFmpeg is not installed\n"
        "[start of libtorchcodec loading traceback]\nTraceback (most recent call last):\nOSError: libavutil.so.60\n"
        "[end of libtorchcodec loading traceback].\n"
    )
    fallback = "'torchcodec' is installed but cannot be loaded (see the error above). Falling back to 'pyav'."
    log = f"INFO before\n{warning}{fallback}\nINFO after\n"
    assert demo.fold_torchcodec_errors(log).splitlines() == [
        "INFO before",
        f"{prefix}Could not load libtorchcodec (6 lines of loader errors left out by the demo)",
        fallback,
        "INFO after",
    ]
    assert demo.fold_torchcodec_errors("INFO step:1 loss:1.0\n") == "INFO step:1 loss:1.0\n"


def test_a_directory_that_holds_no_demo_is_never_replaced(tmp_path, capsys) -> None:
    (tmp_path / "my_data.txt").write_text("precious")
    assert demo.main([f"--output_dir={tmp_path}", *SMALL]) == 2
    assert "does not hold an earlier fastplus demo" in capsys.readouterr().err
    assert (tmp_path / "my_data.txt").read_text() == "precious"


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--held_out_episodes=5", "held_out_episodes=5"),
        ("--steps=0", "steps"),
        ("--chunk_size=15", "multiple of --split_every"),
        ("--reach_targets=5", "reach_targets=5"),
    ],
)
def test_bad_settings_are_refused_before_anything_is_written(tmp_path, capsys, flag, message) -> None:
    out = tmp_path / "demo"
    assert demo.main([f"--output_dir={out}", *SMALL, flag]) == 2
    assert message in capsys.readouterr().err and not out.exists()


@pytest.mark.slow
def test_the_main_job_runs_end_to_end_and_reruns(tmp_path) -> None:
    out = tmp_path / "demo"
    for _ in range(2):  # the second run replaces the first
        result = run([str(BIN / "fastplus-demo"), f"--output_dir={out}", *SMALL], tmp_path)
    stdout = result.stdout
    for stage in ("[1/4]", "[2/4]", "[3/4]", "[4/4]", "fastplus demo done"):
        assert stage in stdout, stage

    # the summary leads with the comparison and the plot, whatever 4 steps achieve
    lead = stdout[stdout.index("fastplus demo done") :].splitlines()[2:9]
    assert lead[0].startswith("Held-out normalised MSE, first 10 actions of 4 chunks from episodes [4]")
    labels = ["flow sampling", "FAST head, autoregressive", "hold the current state", "range centre"]
    for line, label in zip(lead[1:5], labels, strict=True):
        assert line.strip().startswith(label), line
    assert lead[5].startswith(("The policy learned the task", "MISSED THE BAR"))
    assert lead[6].startswith("plot") and str(out / "eval" / "eval_offline.png") in lead[6]

    summary = json.loads((out / "summary.json").read_text())
    checkpoint = out / "train" / "checkpoints" / "last" / "pretrained_model"
    assert summary["training"]["checkpoint"] == str(checkpoint) and (checkpoint / "model.safetensors").is_file()
    assert [r["step"] for r in summary["training"]["log"]][-1] == 4
    evaluation = summary["evaluation"]
    assert evaluation["episodes"] == [4] and len(evaluation["frames"]) == 4
    mse = {d["name"]: d["mse_normalized"] for d in evaluation["decodings"]}
    assert list(mse) == ["flow", "fast (AR)", "hold current state", "range centre"]
    assert all(math.isfinite(v) for v in mse.values())
    rows = dict(zip(["flow", "fast (AR)"], lead[1:3], strict=True))
    for check in summary["bar"]:
        passed = check["mse"] <= 0.5 * mse["hold current state"] and check["mse"] < mse["range centre"]
        assert check["passed"] == passed and check["mse"] == mse[check["name"]]
        assert rows[check["name"]].endswith("PASS" if passed else "MISS")
    policy_config = json.loads((checkpoint / "config.json").read_text())
    assert policy_config["use_relative_actions"] is True
    assert policy_config["relative_exclude_joints"] == demo.RELATIVE_EXCLUDE_JOINTS
    for path in ("train_curves.png", "eval/eval_offline.png", "tokenizer/report.png", "train.log"):
        assert (out / path).stat().st_size > 0, path
    assert str(checkpoint) in stdout
    assert LeRobotDataset(demo.DEMO_REPO_ID, root=out / "dataset", video_backend="pyav").num_episodes == 5
