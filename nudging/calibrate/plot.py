"""The calibration plot: top-1 probability histograms at agreement and disagreement positions, the chosen gamma
marked, and beside them what each gamma would nudge and how well it separates."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nudging.calibrate.analysis import BINS, CANDIDATES, Calibration


def draw(calibration: Calibration, separations: np.ndarray, nudged_shares: np.ndarray, path: Path,
         title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges = np.linspace(0.0, 1.0, BINS + 1)
    centres, width = (edges[:-1] + edges[1:]) / 2, 1.0 / BINS
    figure, (left, right) = plt.subplots(1, 2, figsize=(11.5, 4.2))
    for counts, label, colour, shift in (
        (calibration.histogram_agree, "base agrees with the nudger", "C0", -width / 4),
        (calibration.histogram_disagree, "base disagrees", "C3", width / 4),
    ):
        total = max(1, sum(counts))
        left.bar(centres + shift, [100 * c / total for c in counts], width / 2, color=colour,
                 label=f"{label} ({sum(counts)} positions)")
    left.set_xlabel("base's top-1 probability")
    left.set_ylabel("positions of each kind (%)")
    left.set_title("Where the base agrees and disagrees")
    right.plot(CANDIDATES, 100 * nudged_shares, color="C2", label="positions nudged (p < gamma)")
    right.plot(CANDIDATES, 100 * separations, color="C4", label="separation (disagreements caught - agreements nudged)")
    right.set_xlabel("gamma")
    right.set_ylabel("%")
    right.set_title("What each gamma would do")
    low, high = calibration.interval
    for axes in (left, right):
        axes.axvspan(low, high, color="0.85", zorder=0, label="95% interval" if axes is right else None)
        axes.axvline(calibration.gamma, color="black", linestyle="--", label=f"chosen gamma {calibration.gamma:g}")
        axes.set_xlim(0, 1)
        axes.spines[["top", "right"]].set_visible(False)
        axes.legend(frameon=False, fontsize=8)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
