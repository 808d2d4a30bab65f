"""Plugin discovery: LeRobot finds the distribution by name, registration never raises."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import lerobot_fastplus


def test_lerobot_discovers_and_registers_the_plugin(caplog):
    from lerobot.processor import ProcessorStepRegistry
    from lerobot.utils.import_utils import register_third_party_plugins

    with caplog.at_level(logging.INFO):
        register_third_party_plugins()
    assert "Imported third-party plugin: lerobot_policy_fastplus" in caplog.text
    assert "Could not import third-party plugin" not in caplog.text
    assert "fastplus_fast_action_tokens" in ProcessorStepRegistry.list()


def test_registration_failure_is_logged_not_raised(monkeypatch, caplog):
    monkeypatch.setattr(lerobot_fastplus, "_REGISTERING_MODULES", ("lerobot_fastplus.no_such_module",))
    with caplog.at_level(logging.ERROR):
        lerobot_fastplus._register_with_lerobot()
    assert "could not register the LeRobot types of lerobot_fastplus.no_such_module" in caplog.text


def test_lerobot_train_help_shows_no_plugin_error():
    train = Path(sys.executable).with_name("lerobot-train")
    result = subprocess.run([str(train), "--help"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    log = result.stdout + result.stderr
    assert "Could not import third-party plugin: lerobot_policy_fastplus" not in log
    assert "lerobot_fastplus: could not register" not in log
