"""fastplus-train-tokenizer / fastplus-check-tokenizer on LeRobotDatasets (offline, CPU)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from lerobot.datasets import LeRobotDataset
from scipy.fft import dct

from lerobot_fastplus.data.chunks import load_action_chunks, open_dataset
from lerobot_fastplus.fast import FastTokenizer
from lerobot_fastplus.tools import check_tokenizer, compare_transforms, train_tokenizer
from lerobot_fastplus.tools.compare_transforms import Point, interpolate_at_mse
from testing_support.synthetic_dataset import make_synthetic_dataset

SHARED_DATA = Path(
    os.environ.get("FASTPLUS_SHARED_DATA", Path(__file__).parents[1].parent / "shared" / "data")
).expanduser()
SO101 = SHARED_DATA / "so101_record_test"
G1 = SHARED_DATA / "g1_bottle_pick"
needs_shared_data = pytest.mark.skipif(
    not (SO101.is_dir() and G1.is_dir()),
    reason=f"real datasets not found at {SHARED_DATA} (set FASTPLUS_SHARED_DATA to the shared/data folder)",
)

N_EPISODES, EPISODE_LEN = 6, 40
REPORT_KEYS = {
    "tokens_per_chunk",
    "naive_tokens_per_chunk",
    "compression",
    "errors",
    "decode_failures",
    "clipped_values",
    "clipped_share",
    "ids_used",
    "vocab_utilisation",
    "top_token_share",
    "normalized_range",
    "layout",
    "config",
}


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "synthetic"
    make_synthetic_dataset(root, n_episodes=N_EPISODES, episode_len=EPISODE_LEN, image_size=16, seed=1)
    return root


@pytest.fixture(scope="module")
def trained(synthetic_root, tmp_path_factory) -> Path:
    """Output dir of one training run through the tool's main()."""
    out = tmp_path_factory.mktemp("train")
    args = [f"--root={synthetic_root}", f"--output_dir={out}", "--chunk_size=20", "--split_every=10"]
    assert train_tokenizer.main(args) == 0
    return out


def _run_main(main, args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_train_writes_tokenizer_report_and_plot(trained):
    tokenizer = FastTokenizer.load(trained / "tokenizer")
    assert (tokenizer.time_horizon, tokenizer.action_dim) == (10, 6)
    assert (trained / "report.png").stat().st_size > 10_000
    report = json.loads((trained / "report.json").read_text())
    assert report.keys() >= REPORT_KEYS
    assert report["n_chunks"] == N_EPISODES * (EPISODE_LEN - 10 + 1)
    assert report["naive_tokens_per_chunk"] == 60
    counts = report["tokens_per_chunk"]
    assert 1 <= counts["mean"] <= counts["p95"] <= counts["max"] < 60
    assert report["compression"] == pytest.approx(60 / counts["mean"])
    assert report["errors"]["mse_normalized"] < 2e-3
    assert 0 < report["errors"]["max_abs_original"] < 10  # degrees
    assert report["decode_failures"] == 0 and report["clipped_values"] == 0
    assert 0 < report["vocab_utilisation"] <= 1 and 0 < report["top_token_share"] < 1
    layout = report["layout"]
    assert (layout["chunk_size"], layout["split_every"], layout["parse_failures"]) == (20, 10, 0)
    # two sub-chunks: BOS + tokens + SPLIT + tokens + EOS
    assert layout["tokens_per_chunk"]["min"] >= 5


def test_train_refuses_to_replace_a_saved_tokenizer(trained, synthetic_root, tmp_path, capsys):
    out = shutil.copytree(trained, tmp_path / "out")
    before = (out / "tokenizer" / "tokenizer.json").read_bytes()
    code, _, stderr = _run_main(train_tokenizer.main, [f"--root={synthetic_root}", f"--output_dir={out}"], capsys)
    assert code == 2 and "already exists; pass --overwrite=true" in stderr
    assert (out / "tokenizer" / "tokenizer.json").read_bytes() == before
    args = [f"--root={synthetic_root}", f"--output_dir={out}", "--overwrite=true", "--vocab_size=700"]
    assert _run_main(train_tokenizer.main, args, capsys)[0] == 0
    assert FastTokenizer.load(out / "tokenizer").vocab_size == 700


def test_check_on_trained_tokenizer(trained, synthetic_root, tmp_path, capsys):
    out = tmp_path / "check"
    args = [f"--tokenizer={trained / 'tokenizer'}", f"--root={synthetic_root}", f"--output_dir={out}"]
    code, stdout, _ = _run_main(check_tokenizer.main, args, capsys)
    assert code == 0
    assert "clipped coefficients" in stdout and "tokens per chunk" in stdout
    report = json.loads((out / "report.json").read_text())
    assert report["clip"] is True and report["clipped_values"] == 0
    assert report["horizon"] == 10  # taken from the tokenizer
    assert (out / "report.png").is_file()


def test_check_counts_clipped_coefficients(synthetic_root, tmp_path):
    dataset = open_dataset(synthetic_root, "local/synthetic")
    chunks = load_action_chunks(dataset, 10, show_progress=False)
    # Fitted on shifted data, the tokenizer cannot encode the lowest coefficients of the real data.
    FastTokenizer.fit(chunks.normalized + 1.0).save(tmp_path / "shifted")
    tokenizer = FastTokenizer.load(tmp_path / "shifted")
    coefficients = np.rint(dct(chunks.normalized, axis=1, norm="ortho") * tokenizer.scale)
    expected = (coefficients < tokenizer.min_token).reshape(len(coefficients), -1).sum(axis=1)
    np.testing.assert_array_equal(tokenizer.out_of_range(chunks.normalized), expected)
    assert expected.sum() > 0
    with pytest.raises(ValueError, match="outside this tokenizer's range"):
        tokenizer.encode(chunks.normalized[expected > 0][:1])

    cfg = check_tokenizer.CheckTokenizerConfig(
        tokenizer=str(tmp_path / "shifted"), root=str(synthetic_root), output_dir=str(tmp_path / "out")
    )
    report = check_tokenizer.check(cfg).report
    assert report.clipped_values == expected.sum()
    assert report.clipped_chunks == (expected > 0).sum()
    assert report.clipped_share == pytest.approx(expected.sum() / chunks.normalized.size)
    assert report.decode_failures == 0


def test_check_accepts_published_fast_layout(trained, synthetic_root, tmp_path):
    """The published FAST+ processor_config.json records no horizon / action_dim."""
    published = tmp_path / "published"
    shutil.copytree(trained / "tokenizer", published)
    config = json.loads((published / "processor_config.json").read_text())
    config.update(time_horizon=None, action_dim=None)
    (published / "processor_config.json").write_text(json.dumps(config))
    cfg = check_tokenizer.CheckTokenizerConfig(
        tokenizer=str(published), root=str(synthetic_root), horizon=8, output_dir=str(tmp_path / "out")
    )
    report = check_tokenizer.check(cfg).report
    assert (report.horizon, report.decode_failures) == (8, 0)


def test_chunks_stay_inside_episodes_and_normalise_like_lerobot(synthetic_root):
    dataset = open_dataset(synthetic_root, "local/synthetic")
    actions = np.stack(dataset.hf_dataset.with_format("numpy")["action"])
    episodes = np.asarray(dataset.hf_dataset.with_format("numpy")["episode_index"])
    chunks = load_action_chunks(dataset, 10, stride=3, show_progress=False)
    assert len(chunks.raw) == N_EPISODES * len(range(0, EPISODE_LEN - 9, 3))
    for raw, ep, start in zip(chunks.raw, chunks.episode_index, chunks.start_frame, strict=True):
        np.testing.assert_allclose(raw, actions[episodes == ep][start : start + 10])
    np.testing.assert_allclose(chunks.unnormalize(chunks.normalized), chunks.raw, atol=1e-4)

    stats = dataset.meta.stats["action"]
    q01, q99 = stats["q01"], stats["q99"]
    np.testing.assert_allclose(chunks.normalized, 2 * (chunks.raw - q01) / (q99 - q01) - 1, atol=1e-5)
    minmax = load_action_chunks(dataset, 10, mode="min_max", show_progress=False)
    assert minmax.normalized.min() >= -1 - 1e-6 and minmax.normalized.max() <= 1 + 1e-6
    for mode in ("MEAN_STD", "QUANTILE10", "IDENTITY"):
        chunks = load_action_chunks(dataset, 10, mode=mode, max_chunks=25, seed=3, show_progress=False)
        np.testing.assert_allclose(chunks.unnormalize(chunks.normalized), chunks.raw, atol=1e-3)
    again = load_action_chunks(dataset, 10, mode="IDENTITY", max_chunks=25, seed=3, show_progress=False)
    np.testing.assert_array_equal(again.start_frame, chunks.start_frame)
    assert len(again.raw) == 25


def test_narrow_stats_warn_and_fit_error_is_a_clean_message(synthetic_root, tmp_path, capsys):
    """Like g1_bottle_pick: q01/q99 much narrower than the data -> warning, then fit's vocab error."""
    root = tmp_path / "narrow"
    shutil.copytree(synthetic_root, root)
    stats = json.loads((root / "meta" / "stats.json").read_text())
    q01, q99 = np.array(stats["action"]["q01"]), np.array(stats["action"]["q99"])
    middle = (q01 + q99) / 2
    q01[2], q99[2] = middle[2] - 0.5, middle[2] + 0.5
    stats["action"]["q01"], stats["action"]["q99"] = q01.tolist(), q99.tolist()
    (root / "meta" / "stats.json").write_text(json.dumps(stats))

    args = [f"--root={root}", f"--output_dir={tmp_path / 'out'}"]
    code, stdout, stderr = _run_main(train_tokenizer.main, args, capsys)
    assert code == 2
    assert "WARNING" in stderr and "dim 2 (elbow_flex.pos)" in stderr and "narrow" in stderr
    assert "normalised range" in stdout
    assert "error: vocab_size=1024 leaves no room for BPE merges" in stderr
    assert "Traceback" not in stderr


@pytest.fixture(scope="module")
def no_action_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("noaction") / "ds"
    features = {"observation.state": {"dtype": "float32", "shape": (3,), "names": None}}
    dataset = LeRobotDataset.create("local/no_action", fps=10, features=features, root=root, use_videos=False)
    for _ in range(12):
        dataset.add_frame({"observation.state": np.zeros(3, dtype=np.float32), "task": "idle"})
    dataset.save_episode()
    dataset.finalize()
    return root


def test_errors_name_the_fix(synthetic_root, trained, no_action_root, tmp_path, capsys):
    wrong_dim = tmp_path / "tok3d"
    FastTokenizer.fit(np.random.default_rng(0).uniform(-1, 1, (64, 10, 3))).save(wrong_dim)
    (tmp_path / "empty").mkdir()
    tok = f"--tokenizer={trained / 'tokenizer'}"
    cases = [
        (train_tokenizer.main, [f"--root={tmp_path / 'missing'}"], "does not exist. Pass --root="),
        (train_tokenizer.main, [f"--root={tmp_path / 'empty'}"], "is not a LeRobotDataset"),
        (train_tokenizer.main, [f"--root={no_action_root}"], "has no 'action' feature"),
        (
            train_tokenizer.main,
            [f"--root={synthetic_root}", f"--horizon={EPISODE_LEN + 1}"],
            f"--horizon={EPISODE_LEN + 1} is longer than episode 0, which has only {EPISODE_LEN} frames",
        ),
        (train_tokenizer.main, [f"--root={synthetic_root}", "--normalization_mode=zscore"], "use one of"),
        (train_tokenizer.main, [f"--root={synthetic_root}", "--episodes=[0,99]"], "--episodes must list"),
        (check_tokenizer.main, [f"--root={synthetic_root}", f"--tokenizer={tmp_path / 'nope'}"], "does not exist"),
        (
            check_tokenizer.main,
            [f"--root={synthetic_root}", f"--tokenizer={tmp_path / 'empty'}"],
            "is not a FAST tokenizer directory",
        ),
        (
            check_tokenizer.main,
            [f"--root={synthetic_root}", f"--tokenizer={wrong_dim}"],
            "was fitted on 3-D actions, but",
        ),
        (check_tokenizer.main, [f"--root={synthetic_root}", tok, "--chunk_size=100"], "--chunk_size=100 is longer"),
    ]
    for main, args, message in cases:
        code, _, stderr = _run_main(main, args, capsys)
        assert code == 2, (args, stderr)
        assert message in stderr, (args, stderr)
        assert "Traceback" not in stderr
    assert not (tmp_path / "missing").exists()  # LeRobotDataset would have created it


def test_console_script_in_subprocess(synthetic_root, tmp_path):
    script = Path(sys.executable).with_name("fastplus-train-tokenizer")
    out = tmp_path / "cli"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [str(script), f"--root={synthetic_root}", f"--output_dir={out}", "--vocab_size=512", "--stride=2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "compression" in result.stdout and str(out / "tokenizer") in result.stdout
    assert FastTokenizer.load(out / "tokenizer").vocab_size == 512
    assert json.loads((out / "report.json").read_text())["config"]["stride"] == 2
    assert (out / "report.png").is_file()


@needs_shared_data
def test_train_on_real_so101(tmp_path, capsys):
    out = tmp_path / "so101"
    code, stdout, _ = _run_main(train_tokenizer.main, [f"--root={SO101}", f"--output_dir={out}"], capsys)
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["action_dim"] == 6 and report["n_chunks"] == 1492 - 4 * 9
    assert report["compression"] > 4 and report["errors"]["mse_normalized"] < 1e-3
    assert "tokens per chunk" in stdout


@needs_shared_data
def test_g1_needs_a_larger_vocab_then_checks(tmp_path, capsys):
    code, _, stderr = _run_main(train_tokenizer.main, [f"--root={G1}", f"--output_dir={tmp_path / 'small'}"], capsys)
    assert code == 2
    assert "WARNING" in stderr and "narrow" in stderr
    assert "Use vocab_size > " in stderr and "Traceback" not in stderr

    out = tmp_path / "g1"
    args = [f"--root={G1}", f"--output_dir={out}", "--vocab_size=2048", "--max_chunks=3000"]
    assert _run_main(train_tokenizer.main, args, capsys)[0] == 0
    check_out = tmp_path / "g1_check"
    args = [f"--root={G1}", f"--tokenizer={out / 'tokenizer'}", f"--output_dir={check_out}", "--stride=2"]
    code, stdout, _ = _run_main(check_tokenizer.main, args, capsys)
    assert code == 0 and "clipped coefficients" in stdout
    report = json.loads((check_out / "report.json").read_text())
    assert report["action_dim"] == 26 and report["decode_failures"] == 0
    assert report["errors"]["mse_normalized"] < 2e-3
    assert 0 < report["vocab_utilisation"] <= 1


# ---------------------------------------------------------------------- transforms


def test_train_and_check_use_and_report_the_transform(synthetic_root, tmp_path, capsys):
    out = tmp_path / "db2"
    code, stdout, _ = _run_main(
        train_tokenizer.main, [f"--root={synthetic_root}", f"--output_dir={out}", "--transform=DB2"], capsys
    )
    assert code == 0 and "db2, scale 10" in stdout
    assert FastTokenizer.load(out / "tokenizer").transform == "db2"
    report = json.loads((out / "report.json").read_text())
    assert report["tokenizer"]["transform"] == "db2" and report["decode_failures"] == 0
    args = [f"--tokenizer={out / 'tokenizer'}", f"--root={synthetic_root}", f"--output_dir={tmp_path / 'check'}"]
    code, stdout, _ = _run_main(check_tokenizer.main, args, capsys)
    assert code == 0 and "db2, scale 10" in stdout
    assert json.loads((tmp_path / "check" / "report.json").read_text())["tokenizer"]["transform"] == "db2"
    code, _, stderr = _run_main(train_tokenizer.main, [f"--root={synthetic_root}", "--transform=fourier"], capsys)
    assert code == 2 and "unknown transform 'fourier'" in stderr


def test_interpolation_is_linear_in_log_mse():
    points = [Point("dct", 5.0, tokens_per_chunk=10.0, mse=1e-3), Point("dct", 20.0, tokens_per_chunk=20.0, mse=1e-5)]
    tokens, scale = interpolate_at_mse([*points, Point("dct", 40.0, error="vocab too small")], 1e-4)
    assert tokens == pytest.approx(15.0) and scale == pytest.approx(10.0)
    assert interpolate_at_mse(points, 1e-3) == pytest.approx((10.0, 5.0))
    assert interpolate_at_mse(points, 2e-3) is None and interpolate_at_mse(points, 1e-6) is None


def test_compare_transforms_sweeps_interpolates_and_writes(synthetic_root, tmp_path, capsys):
    out = tmp_path / "compare"
    args = [
        f"--root={synthetic_root}",
        f"--output_dir={out}",
        "--transforms=[dct,haar,none]",
        "--scales=[4,10,25]",
        "--holdout=0.3",
        "--vocab_size=512",
    ]
    code, stdout, _ = _run_main(compare_transforms.main, args, capsys)
    assert code == 0, stdout
    result = json.loads((out / "rate_distortion.json").read_text())
    assert str(synthetic_root) not in (out / "rate_distortion.json").read_text()  # no machine-specific path
    assert (out / "rate_distortion.png").stat().st_size > 10_000
    assert result["eval_episodes"] == [4, 5] and result["fit_episodes"] == [0, 1, 2, 3]
    assert result["eval_chunks"] == 2 * (EPISODE_LEN - 10 + 1)
    swept = [p for p in result["points"] if p["scale"] in (4, 10, 25)]
    expected = {(t, s) for t in ("dct", "haar", "none") for s in (4, 10, 25)}
    assert {(p["transform"], p["scale"]) for p in swept} == expected
    dct10 = next(p for p in swept if (p["transform"], p["scale"]) == ("dct", 10))
    assert result["target_mse"] == dct10["mse"]
    rows = {row["transform"]: row for row in result["at_target"]}
    assert rows["dct"]["vs_dct"] == 1 and rows["dct"]["tokens_per_chunk"] == dct10["tokens_per_chunk"]
    for name, row in rows.items():
        reaching = [p for p in swept if p["transform"] == name and p["mse"] <= result["target_mse"]]
        if row["measured"] is not None and row["measured"]["mse"] <= result["target_mse"]:
            reaching.append(row["measured"])
        fewest = row["fewest_within_target"]
        assert (fewest is None) == (not reaching)
        if fewest is not None:
            assert fewest["tokens_per_chunk"] == min(p["tokens_per_chunk"] for p in reaching)
    for name in ("haar", "none"):
        row = rows[name]
        if row["tokens_per_chunk"] is None:
            continue
        curve = sorted((p for p in swept if p["transform"] == name), key=lambda p: p["mse"])
        lo = [p for p in curve if p["mse"] <= result["target_mse"]][-1]
        hi = next(p for p in curve if p["mse"] >= result["target_mse"])
        tokens = sorted([lo["tokens_per_chunk"], hi["tokens_per_chunk"]])
        assert tokens[0] - 1e-9 <= row["tokens_per_chunk"] <= tokens[1] + 1e-9
        assert lo["scale"] >= row["scale"] >= hi["scale"]
        assert row["measured"]["scale"] == pytest.approx(row["scale"], abs=1e-3)
        assert row["vs_dct"] == pytest.approx(row["tokens_per_chunk"] / dct10["tokens_per_chunk"])
    assert "| dct | " in stdout and "rate_distortion.png" in stdout


def test_compare_transforms_errors_name_the_fix(synthetic_root, capsys):
    root = f"--root={synthetic_root}"
    cases = [
        ([root, "--transforms=[dct,dct]"], "lists a transform twice"),
        ([root, "--transforms=[dct,bior2.2]"], "unknown transform 'bior2.2'"),
        ([root, "--transforms=[haar]"], "pass --target_mse"),
        ([root, "--holdout=1"], "--holdout is a share of episodes in [0, 1)"),
        ([root, "--chunk_size=20"], "compare one --horizon at a time"),
        ([root, "--scales=[0,10]"], "must be positive"),
    ]
    for args, message in cases:
        code, _, stderr = _run_main(compare_transforms.main, args, capsys)
        assert code == 2 and message in stderr, (args, stderr)
        assert "Traceback" not in stderr


@needs_shared_data
def test_compare_on_real_so101_dct_needs_the_fewest_tokens(tmp_path, capsys):
    """The README's finding for so101_record_test at horizon 10, on a shorter sweep."""
    args = [
        f"--root={SO101}",
        f"--output_dir={tmp_path}",
        "--transforms=[dct,haar,db4,none]",
        "--scales=[7,10,14,20]",
    ]
    assert _run_main(compare_transforms.main, args, capsys)[0] == 0
    rows = {r["transform"]: r for r in json.loads((tmp_path / "rate_distortion.json").read_text())["at_target"]}
    assert rows["haar"]["vs_dct"] > 1.3 and rows["db4"]["vs_dct"] > 1.3 and rows["none"]["vs_dct"] > 2
    assert all(r["measured"]["clipped_share"] < 1e-3 for r in rows.values())
