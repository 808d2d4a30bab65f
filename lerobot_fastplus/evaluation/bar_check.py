"""The bar a decoding must clear on held-out episodes (``fastplus-demo``'s verdict).

A decoding has learned the task when its held-out normalised MSE is at most ``BAR`` x that of holding the current
state, and below that of the range centre (predicting 0 in normalised space): both baselines come from the same
``evaluate_checkpoint`` run.
"""

from __future__ import annotations

from dataclasses import dataclass

from lerobot_fastplus.evaluation.offline import CENTRE, HOLD, OfflineEvalResult

BAR = 0.5
DECODING_LABELS = {"flow": "flow sampling", "fast (AR)": "FAST head, autoregressive"}


@dataclass(frozen=True)
class BarCheck:
    """One decoding's held-out MSE against the bar."""

    name: str
    mse: float
    hold: float
    centre: float

    @property
    def limit(self) -> float:
        return BAR * self.hold

    @property
    def passed(self) -> bool:
        return self.mse <= self.limit and self.mse < self.centre


def check_bar(evaluation: OfflineEvalResult) -> list[BarCheck]:
    """The bar check of every decoding the policy ran (not of the baselines)."""
    hold, centre = evaluation.result(HOLD).mse_normalized, evaluation.result(CENTRE).mse_normalized
    return [
        BarCheck(d.name, d.mse_normalized, hold, centre) for d in evaluation.decodings if d.name not in (HOLD, CENTRE)
    ]


def format_comparison(evaluation: OfflineEvalResult, checks: list[BarCheck]) -> str:
    """The summary's lead: each decoding and both baselines, with the verdict against the bar."""
    hold, centre = evaluation.result(HOLD).mse_normalized, evaluation.result(CENTRE).mse_normalized
    bar = f"pass: at most {BAR:g} x hold = {BAR * hold:.4f} and below range centre {centre:.4f}"
    rows = [(DECODING_LABELS.get(c.name, c.name), f"{c.mse:.4f}", "PASS" if c.passed else "MISS") for c in checks]
    rows += [("hold the current state (baseline)", f"{hold:.4f}", ""), ("range centre (baseline)", f"{centre:.4f}", "")]
    width = max(len(name) for name, _, _ in rows)
    lines = [
        f"Held-out normalised MSE, first {evaluation.n_action_steps} actions of {len(evaluation.frames)} chunks from "
        f"episodes {evaluation.episodes} (lower is better; {bar}):"
    ]
    lines += [f"  {name.ljust(width)}  {mse}  {verdict}".rstrip() for name, mse, verdict in rows]
    missed = [c for c in checks if not c.passed]
    if not missed:
        lines.append(
            f"The policy learned the task: every decoding needs less than {BAR:g}x the error of holding still."
        )
    else:
        lines.append(
            "MISSED THE BAR: "
            + "; ".join(
                f"{DECODING_LABELS.get(c.name, c.name)} {c.mse:.4f} vs limit {c.limit:.4f}, centre {c.centre:.4f}"
                for c in missed
            )
            + ". Another seed or machine can land here; more steps (--steps) usually help."
        )
    return "\n".join(lines)
