"""``fastplus-demo``, the README's main job: dataset -> FAST tokenizer -> ``lerobot-train`` pi05_ki -> held-out
evaluation -> summary (small settings, CPU, offline)."""

from __future__ import annotations

import json
import math

import pytest
from cli_helpers import BIN, run
from lerobot.datasets import LeRobotDataset

from lerobot_fastplus import demo

SMALL = [
    "--n_episodes=5",
    "--held_out_episodes=1",
    "--episode_len=40",
    "--image_size=32",
    "--steps=4",
    "--batch_size=2",
    "--eval_frames=4",
]


def test_log_lines_of_lerobot_train_are_parsed() -> None:
    line = (
        "INFO 2026-11-22 14:22:31 ot_train.py:641 step:50 smpl:400 ep:4 epch:0.20 loss:7.531 grdn:1.636 lr:1.4e-04 "
        "updt_s:0.767 data_s:0.082 smp/s:9 flow_loss:1.540 fast_ce_loss:5.992 fast_token_accuracy:0.039"
    )
    assert demo.parse_log_line(line) == {
        "step": 50,
        "loss": 7.531,
        "flow_loss": 1.54,
        "fast_ce_loss": 5.992,
        "fast_token_accuracy": 0.039,
    }
    assert demo.parse_log_line("INFO ... step:1K smpl:8K loss:2e-3")["step"] == 1000
    assert demo.parse_log_line("Training:  68%|######8   | 41/60 [00:16<00:03,  5.80step/s]") is None


def test_a_directory_that_holds_no_demo_is_never_replaced(tmp_path, capsys) -> None:
    (tmp_path / "my_data.txt").write_text("precious")
    assert demo.main([f"--output_dir={tmp_path}", *SMALL]) == 2
    assert "does not hold an earlier fastplus demo" in capsys.readouterr().err
    assert (tmp_path / "my_data.txt").read_text() == "precious"


@pytest.mark.parametrize(
    ("flag", "message"), [("--held_out_episodes=5", "held_out_episodes=5"), ("--steps=0", "steps")]
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
    for stage in ("[1/4]", "[2/4]", "[3/4]", "[4/4]", "fastplus demo done", "Held-out action error"):
        assert stage in stdout, stage
    summary = json.loads((out / "summary.json").read_text())
    checkpoint = out / "train" / "checkpoints" / "last" / "pretrained_model"
    assert summary["training"]["checkpoint"] == str(checkpoint) and (checkpoint / "model.safetensors").is_file()
    assert [r["step"] for r in summary["training"]["log"]][-1] == 4
    evaluation = summary["evaluation"]
    assert evaluation["episodes"] == [4] and len(evaluation["frames"]) == 4
    names = [d["name"] for d in evaluation["decodings"]]
    assert names == ["flow", "fast (AR)", "hold current state"]
    for d in evaluation["decodings"]:
        assert math.isfinite(d["mse_normalized"]) and math.isfinite(d["mse_original"])
    for path in ("train_curves.png", "eval/eval_offline.png", "tokenizer/report.png", "train.log"):
        assert (out / path).stat().st_size > 0, path
    assert str(checkpoint) in stdout and str(out / "eval" / "eval_offline.png") in stdout
    assert LeRobotDataset(demo.DEMO_REPO_ID, root=out / "dataset", video_backend="pyav").num_episodes == 5
