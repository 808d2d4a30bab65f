"""``--help`` of every console script in pyproject.toml's ``[project.scripts]`` (read from the file, so a new script
is covered without editing this test): exit 0 and print its usage, in a fresh process as a user runs it.

A ``%`` in a config field's comment used to crash the help (argparse formats the help text with ``%``), and help
took seconds while the commands imported LeRobot's datasets, torch or transformers at module level and the package
registered its LeRobot types. That the help works is checked here, and that it imports none of those; not how fast
it is.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from cli_helpers import BIN

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
HEAVY = ("torch", "transformers", "lerobot.datasets", "lerobot.policies")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_help_prints_the_usage_and_exits_0(script: str, tmp_path: Path) -> None:
    executable = BIN / script
    assert executable.is_file(), f"{executable} is missing: reinstall the package (pip install -e .)"
    result = subprocess.run(
        [str(executable), "--help"], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"{script} --help failed:\n{result.stderr[-3000:]}"
    assert result.stdout.startswith("usage:"), f"{script} --help printed no usage:\n{result.stdout[:2000]}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert not any(tmp_path.iterdir()), f"{script} --help wrote {sorted(p.name for p in tmp_path.iterdir())}"


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_help_imports_neither_torch_nor_lerobots_datasets(script: str, tmp_path: Path) -> None:
    """What the console script does, with the modules loaded once the help is printed."""
    module, function = SCRIPTS[script].split(":")
    code = (
        f"import sys\nsys.argv = [{script!r}, '--help']\nfrom {module} import {function}\n"
        f"try:\n    {function}()\nexcept SystemExit:\n    pass\n"
        f"print('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "HEAVY=", f"{script} --help imported {result.stdout[-200:]}"
