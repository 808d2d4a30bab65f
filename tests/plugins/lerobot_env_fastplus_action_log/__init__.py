"""Test instrumentation loaded as the LeRobot plugin ``lerobot_env_fastplus_action_log``
(``tests/test_libero_eval.py`` installs a fake distribution of that name).

When ``FASTPLUS_ACTION_LOG`` names a file, every action that LeRobot's real LIBERO env receives
(``lerobot.envs.libero.LiberoEnv.step``, after the policy's and the env's postprocessors) is appended to it as one
JSON line ``{"task": ..., "task_id": ..., "action": [...]}``, so a test can check what ``lerobot-eval`` sent to the
simulator. Without the variable it changes nothing and imports nothing.
"""

from __future__ import annotations

import json
import os


def _log_actions(path: str) -> None:
    import numpy as np
    from lerobot.envs import libero

    step = libero.LiberoEnv.step

    def logged_step(self: libero.LiberoEnv, action: np.ndarray):
        with open(path, "a") as log:
            log.write(json.dumps({"task": self.task, "task_id": self.task_id, "action": np.asarray(action).tolist()}))
            log.write("\n")
        return step(self, action)

    libero.LiberoEnv.step = logged_step


if os.environ.get("FASTPLUS_ACTION_LOG"):
    _log_actions(os.environ["FASTPLUS_ACTION_LOG"])
