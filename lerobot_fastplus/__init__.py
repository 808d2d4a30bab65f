"""lerobot_fastplus: FAST action tokens with split layout, pi05_ki and pi0_fast for LeRobot.

Importing this package registers its LeRobot types. LeRobot imports plugins inside a
``try`` that only logs, so a failure here would silently drop every type the plugin adds;
registration therefore catches, logs the cause loudly and never raises.
"""

import importlib
import logging

__version__ = "0.1.0"

logger = logging.getLogger(__name__)


# Modules whose import registers a LeRobot type (processor step, policy configs).
_REGISTERING_MODULES = (
    "lerobot_fastplus.fast_action_step",
    "lerobot_fastplus.policies.pi05_ki.configuration_pi05_ki",
    "lerobot_fastplus.policies.pi0_fast.configuration_pi0_fast",
)


def _register_with_lerobot() -> None:
    for module in _REGISTERING_MODULES:
        try:
            importlib.import_module(module)
        except Exception:  # registration must never raise, see module docstring
            logger.exception("lerobot_fastplus: could not register the LeRobot types of %s", module)


_register_with_lerobot()
