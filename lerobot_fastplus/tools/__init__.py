"""Command-line tools: train and check a FAST action tokenizer on a local LeRobotDataset.

``chunks`` reads and normalises action chunks, ``report`` measures a tokenizer on them,
``train_tokenizer`` / ``check_tokenizer`` are the console scripts, and ``synthetic_dataset``
writes a small offline LeRobotDataset for demos and tests.
"""
