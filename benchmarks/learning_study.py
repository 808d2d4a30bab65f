"""Learning study: LeRobot's core pi05, pi05_ki (flow and FAST decoding) and pi0_fast, trained side by side.

All three policies get the same backbone size (``gemma_tiny`` for backbone and expert by default, 64x64 images),
the same initial weights (pi05_ki is built from the seed; core pi05 loads its state dict, pi0_fast its PaliGemma
part), the same training batches in the same order, batch size, optimizer settings and number of steps:

* ``pi05``: LeRobot's core pi05 (flow matching only), built at the tiny size by ``core_pi05_tiny``;
* ``pi05_ki``: flow matching + FAST cross-entropy behind KI's stop-gradient; evaluated twice, sampling with flow
  (``pi05_ki/flow``) and decoding greedily from its FAST head (``pi05_ki/fast``, ``action_decoding="fast"``);
* ``pi0_fast``: this plugin's autoregressive pi0-FAST (split layout, constrained greedy decoding).

Data is LeRobot's training path: ``LeRobotDataset`` with the policies' ``delta_timestamps`` (the action chunk),
LeRobot's ``EpisodeAwareSampler`` (shuffled, seeded), uint8 images scaled to [0, 1] as ``lerobot-train`` does, and
each policy's own pre/post-processors from ``make_pre_post_processors`` with the dataset's ``meta/stats.json``.
The last ``ceil(eval_split * episodes)`` episodes (per task, ``lerobot-train``'s ``eval_split`` rule) are held out;
the FAST tokenizer is fitted on ``split_every``-step windows of the training episodes only.

Normalisation: MIN_MAX for state and action, for all three policies (``--normalization``). g1_bottle_pick's stored
q01/q99 are means of per-episode quantiles, so QUANTILES-normalised g1 actions reach -18..34: FAST then needs a
2048+ vocabulary and ~340 tokens per 50-step chunk (beyond pi0's 256-token budget), and pi0.5's 256 state bins,
which span [-1, 1], saturate. MIN_MAX keeps actions and state in [-1, 1] and gives ~172 tokens per chunk at vocab
1024 on g1 (MEAN_STD: ~190 at vocab 2048, states beyond [-1, 1] saturate the bins).

Every ``eval_every`` steps (and at step 0), on a fixed set of ``eval_frames`` evenly spaced held-out frames whose
first ``n_action_steps`` actions are real, with the same sampling-noise seed for every method and evaluation:

* held-out MSE of the predicted chunk's first ``n_action_steps`` steps against the recorded actions, normalised
  (policy output) and in original units (after the policy's post-processor);
* smoothness: mean squared second difference along time of those steps, normalised units (the recorded
  actions' value is reported as ``gt_smoothness``);
* latency: median seconds of one ``predict_action_chunk`` call for a single observation (batch 1, preprocessed);
* decode failures (autoregressive decoding): chunks with at least one missing / undecodable sub-chunk, from the
  split-layout parse the policy runs, plus generated tokens per chunk. Undecoded steps hold a neighbour or the
  normalised origin (the range centre), so AR rows also give MSE over decoded steps only and smoothness over
  completely decoded chunks (``*_decoded``);
* two trivial baselines on the same frames: predicting the range centre, and holding the current state (when state
  and action name the same joints);
* training: per-step loss terms and wall-clock (and process CPU) seconds per optimizer step (forward, backward,
  clipping, AdamW, scheduler; preprocessing and data loading are timed apart). On a shared machine wall-clock is
  inflated by other jobs: the JSON keeps the load average, CPU seconds and ``--note``.

Without cameras (``--image_free=true`` or a state-only dataset) pi05_ki and pi0_fast run on a prompt-only prefix
(task and state tokens; the plugin's ``StateOnlyCameras``). Core pi05 raises "All image features are missing from
the batch" there, although its model takes any number of images; ``--patch_core_pi05_without_camera`` (default
true) gives the study's core pi05 instance the same prompt-only prefix (recorded in the JSON), false leaves it out.

Repeatable: python/numpy/torch seeded, ``torch.use_deterministic_algorithms``, a seeded sampler, a private random
stream per policy (each method's numbers do not depend on which other methods run). Same machine + same thread
count -> same numbers.

Writes ``<output_dir>/<name>.json`` (settings, machine, per-evaluation curves, per-step losses and times) and
``<name>.png`` (learning curves), and prints a table. The defaults (g1, tiny, 1500 steps, batch 8, 48 frames scored
every 100 steps) took 17.5 minutes on g1_bottle_pick and 15 on so101_record_test (state-only) on a quiet 2-core
CPU, 2.5 GB peak RSS::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/learning_study.py
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/learning_study.py --root=../shared/data/so101_record_test

Check repeatability by running a short setting twice and comparing the JSONs (identical on one machine)::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/learning_study.py --steps=20 --eval_every=10 --eval_frames=8 \
        --output_dir=/tmp/a   # then --output_dir=/tmp/b

On a GPU, train longer and score more frames and seeds (the CPU defaults stop while the autoregressive
decoders still miss sub-chunks; not run here, no GPU was available), e.g. ``--device=cuda --steps=20000
--eval_every=1000 --batch_size=32 --eval_frames=256 --seeds=[0,1,2] --num_workers=8``. The published sizes
(PaliGemma gemma_2b + gemma_300m expert, 224x224, randomly initialised here: no pretrained weights are loaded)
need a large GPU (three 3B-parameter models side by side) and the real PaliGemma tokenizer (the local stand-in
only knows the task words)::

    python benchmarks/learning_study.py --device=cuda --paligemma_variant=gemma_2b \
        --action_expert_variant=gemma_300m --dtype=bfloat16 --steps=5000 --eval_every=500 --batch_size=32 \
        --eval_frames=256 --seeds=[0,1,2] --lr=1e-4 --text_tokenizer=google/paligemma-3b-pt-224 --num_workers=8

The code lives in ``benchmarks/study/``: ``config`` (this command line), ``data``, ``training``, ``evaluation``,
``stats``, ``tables``, ``plot``, ``results`` (derived numbers and ``--merge``) and ``run`` (the whole study).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: testing_support
from study.run import main

if __name__ == "__main__":
    sys.exit(main())
