"""Test-only LeRobot robot plugin: ``--robot.type=fastplus_mock_so100``, an SO-100 follower without hardware.

LeRobot imports it through ``register_third_party_plugins`` when a distribution of this name is installed; the
tests fake that installation with a ``.dist-info`` folder on ``PYTHONPATH`` (``cli_helpers.plugin_pythonpath``).
"""

from .config_mock_so100 import MockSO100Config
from .mock_so100 import MockSO100

__all__ = ["MockSO100", "MockSO100Config"]
