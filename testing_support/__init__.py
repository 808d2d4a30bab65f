"""Code that only the tests and the benchmarks use, kept out of the installed package.

``core_tiny`` builds LeRobot's core pi05 / pi0_fast at the plugin's Gemma variants (by patching core's size lookup
while it constructs) and makes reduced-depth variants of the published widths. ``synthetic_dataset`` writes a small
LeRobotDataset of an SO-100-like arm (with camera) for the command-line tests. Not installed: ``tests/conftest.py``
and the benchmarks put the repo root on ``sys.path``. May import ``lerobot_fastplus``; nothing in
``lerobot_fastplus`` imports it.
"""
