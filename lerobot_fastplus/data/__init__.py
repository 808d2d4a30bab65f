"""Datasets and action chunks: read a local LeRobotDataset's action chunks, normalised as a policy sees them
(``chunks``; ``chunk_source``, the flags that choose them, imports nothing heavy), LIBERO's asset manifest and where
its simulator finds the files (``libero_assets``).

Layer: below the policies, the evaluation and the commands. Imports only LeRobot and ``lerobot_fastplus.fast``; never
``policies``, ``evaluation`` or ``tools``.
"""
