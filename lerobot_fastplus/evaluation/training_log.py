"""``lerobot-train``'s log: the metrics of its lines, and the training curves they make (``fastplus-demo``)."""

from __future__ import annotations

import re
from pathlib import Path

LOG_LINE = re.compile(r"step:(?P<step>[\d.]+)(?P<unit>[KMB]?) .*")
METRICS = ("loss", "flow_loss", "fast_ce_loss", "fast_token_accuracy")


def parse_log_line(line: str) -> dict[str, float] | None:
    """The metrics of one ``lerobot-train`` log line (``step:100 smpl:800 ... loss:0.123 ...``), or None."""
    match = LOG_LINE.search(line)
    if match is None:
        return None
    scale = {"": 1, "K": 1e3, "M": 1e6, "B": 1e9}[match["unit"]]
    record = {"step": float(match["step"]) * scale}
    for name in METRICS:
        value = re.search(rf"\b{name}:(-?[\d.]+(?:e[-+]?\d+)?)", line)
        if value:
            record[name] = float(value.group(1))
    return record


def plot_training(records: list[dict[str, float]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records]
    fig, (losses, accuracy) = plt.subplots(1, 2, figsize=(10, 4))
    for name in ("loss", "flow_loss", "fast_ce_loss"):
        losses.plot(steps, [r.get(name) for r in records], label=name)
    losses.set_yscale("log")
    losses.set_xlabel("step")
    losses.legend()
    accuracy.plot(steps, [r.get("fast_token_accuracy") for r in records], color="C3")
    accuracy.set_xlabel("step")
    accuracy.set_ylabel("next-token accuracy on FAST targets")
    fig.suptitle("pi05_ki training (lerobot-train log)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
