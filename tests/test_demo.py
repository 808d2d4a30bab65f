"""``fastplus-demo``, the README's main job: record SO-101 demonstrations in MuJoCo -> FAST tokenizer ->
``lerobot-train`` pi05_ki -> ``lerobot-eval --env.type=so101_sim`` next to the baselines -> summary that leads with
the success rates (small settings, CPU, offline)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from cli_helpers import BIN, run

from lerobot_fastplus.evaluation.closed_loop import SuccessRate, read_eval_info, verdict, wilson
from lerobot_fastplus.evaluation.training_log import parse_log_line
from lerobot_fastplus.tools import demo

REPO = Path(__file__).resolve().parents[1]
SMALL = [
    "--n_demos=4",
    "--held_out_demos=1",
    "--steps=4",
    "--batch_size=4",
    "--eval_episodes=2",
    "--open_loop_frames=2",
]
# set per run by the demo rather than copied from the config file
RUN_SPECIFIC = {"text_tokenizer_name", "fast_tokenizer_path", "scheduler_warmup_steps", "scheduler_decay_steps"}


def _flag_value(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def test_the_demo_trains_with_the_shipped_so101_config() -> None:
    shipped = json.loads((REPO / "configs" / "pi05_ki_so101_sim.json").read_text())
    expected = {k: v for k, v in shipped["policy"].items() if k not in RUN_SPECIFIC}
    assert {k: _flag_value(v) for k, v in demo.POLICY_FLAGS.items()} == expected
    assert demo.DemoConfig().batch_size == shipped["batch_size"]


def test_wilson_interval_is_well_behaved_at_the_ends() -> None:
    assert wilson(0, 50)[0] == 0.0 and wilson(0, 50)[1] == pytest.approx(0.0713, abs=1e-3)
    assert wilson(50, 50)[1] == pytest.approx(1.0) and wilson(50, 50)[0] == pytest.approx(0.9287, abs=1e-3)
    assert wilson(0, 0) == (0.0, 1.0)


def test_verdict_needs_the_bar_and_an_interval_above_every_blind_baseline() -> None:
    blind = [SuccessRate("hold", 0, 50), SuccessRate("random", 2, 50)]
    passed, sentence = verdict(SuccessRate("policy", 45, 50), blind, bar=0.8)
    assert passed and sentence.startswith("PASS: policy succeeds in 90%") and "best: random" in sentence
    passed, sentence = verdict(SuccessRate("policy", 35, 50), blind, bar=0.8)
    assert not passed and sentence == "BELOW THE BAR: policy: success 70% is below the bar of 80%."
    # at the bar but indistinguishable from a blind baseline that often succeeds by chance
    passed, sentence = verdict(SuccessRate("policy", 8, 10), [SuccessRate("mean", 6, 10)], bar=0.8)
    assert not passed and sentence.endswith("its interval overlaps mean's.")


def test_success_is_read_from_lerobot_evals_output(tmp_path) -> None:
    overall = {"pc_success": 90.0, "n_episodes": 50, "eval_s": 12.5, "avg_sum_reward": 1.0}
    (tmp_path / "eval_info.json").write_text(json.dumps({"overall": overall}))
    rate = read_eval_info(tmp_path, "pi05_ki")
    assert (rate.successes, rate.n, rate.eval_s, rate.rate) == (45, 50, 12.5, 0.9)
    assert rate.row(10) == "  pi05_ki     45/50   0.90  [0.79, 0.96]"


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
        f"{prefix}Could not load libtorchcodec (6 lines of loader errors left out by the demo; harmless, the demo "
        "decodes no video)",
        fallback,
        "INFO after",
    ]
    assert demo.fold_torchcodec_errors("INFO step:1 loss:1.0\n") == "INFO step:1 loss:1.0\n"


def test_a_directory_that_holds_no_demo_is_never_replaced(tmp_path, capsys) -> None:
    (tmp_path / "my_data.txt").write_text("precious")
    assert demo.main([f"--output_dir={tmp_path}", *SMALL]) == 2
    assert "does not hold an earlier fastplus demo" in capsys.readouterr().err
    assert (tmp_path / "my_data.txt").read_text() == "precious"


def test_an_earlier_demo_is_replaced(tmp_path) -> None:
    out = tmp_path / "demo"
    demo.prepare_output_dir(out)
    (out / "train").mkdir()
    demo.prepare_output_dir(out)
    assert sorted(p.name for p in out.iterdir()) == [demo.MARKER]


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--held_out_demos=0", "--held_out_demos"),
        ("--steps=0", "steps"),
        ("--noise=-1", "--noise (-1.0) must be >= 0"),
        ("--eval_seed=3", "--eval_seed=3 reuses recorded seeds (0..4)"),
    ],
)
def test_bad_settings_are_refused_before_anything_is_written(tmp_path, capsys, flag, message) -> None:
    out = tmp_path / "demo"
    assert demo.main([f"--output_dir={out}", *SMALL, flag]) == 2
    assert message in capsys.readouterr().err and not out.exists()


@pytest.mark.slow
def test_the_main_job_runs_end_to_end(tmp_path) -> None:
    out = tmp_path / "demo"
    stdout = run([str(BIN / "fastplus-demo"), f"--output_dir={out}", *SMALL], tmp_path).stdout
    for stage in ("[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]", "fastplus demo done"):
        assert stage in stdout, stage

    # the summary leads with the closed-loop success rates next to the baselines, whatever 4 steps achieve
    lead = stdout[stdout.index("fastplus demo done") :].splitlines()[2:10]
    assert lead[0].startswith('Closed-loop success on "reach the cube and close the gripper on it"')
    assert lead[1].startswith("(simulator seeds 100000..100001")
    labels = [demo.POLICY_LABEL, *demo.BASELINES]
    for line, label in zip(lead[2:7], labels, strict=True):
        assert line.strip().startswith(label), line
    assert lead[3].split()[2] == "2/2"  # the scripted expert succeeds
    assert lead[4].split()[3] == "0/2"  # doing nothing does not
    assert lead[7].startswith(("PASS", "BELOW THE BAR"))

    summary = json.loads((out / "summary.json").read_text())
    results = {r["label"]: r for r in summary["closed_loop"]["results"]}
    assert list(results) == labels and all(r["n"] == 2 for r in results.values())
    assert summary["closed_loop"]["verdict"] == lead[7]
    checkpoint = out / "train" / "checkpoints" / "last" / "pretrained_model"
    assert summary["training"]["checkpoint"] == str(checkpoint) and (checkpoint / "model.safetensors").is_file()
    assert [r["step"] for r in summary["training"]["log"]][-1] == 4
    assert json.loads((checkpoint / "config.json").read_text())["expert_state_token"] is True
    mse = {d["name"]: d["mse_normalized"] for d in summary["open_loop"]["decodings"]}
    assert list(mse) == ["flow", "fast (AR)", "range centre"] and all(math.isfinite(v) for v in mse.values())
    commands = (out / "commands.sh").read_text()
    assert commands.count("lerobot-eval") == 5 and "--policy.kind=random" in commands
    assert "'--policy.normalization_mapping={" in commands  # quoted: the file runs as it is
    assert list((out / "eval" / "pi05_ki_flow_sampling" / "videos").rglob("*.mp4"))  # schematic video, no OpenGL
    for path in ("train_curves.png", "open_loop/eval_offline.png", "tokenizer/report.png", "train.log"):
        assert (out / path).stat().st_size > 0, path
