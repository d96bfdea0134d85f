"""Bar charts of benchmark figures: regfs beside what a user would run instead.

Used by scripts/bench.py; needs matplotlib (``pip install -e '.[bench]'``), and without it
the benchmarks still print their tables and say the chart was left out.
"""

from __future__ import annotations

from pathlib import Path

IMAGES = Path(__file__).resolve().parent.parent / "docs" / "img"
COLOURS = ("#2b6cb0", "#a0aec0", "#718096", "#cbd5e0")


def bars(
    name: str,
    title: str,
    labels: list[str],
    series: dict[str, list[float | None]],
    *,
    unit: str,
    target: float | None = None,
) -> None:
    """Grouped horizontal bars, one group per label, one bar per series (regfs first; None
    where a series has no figure); written to docs/img/bench-NAME.png."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"(chart {name} left out: matplotlib is not installed)")
        return
    height = 0.8 / len(series)
    figure, axes = plt.subplots(figsize=(8, 1.2 + 0.45 * len(labels) * len(series)))
    for number, (what, values) in enumerate(series.items()):
        shown = [(row + number * height, v) for row, v in enumerate(values) if v is not None]
        positions = [position for position, _ in shown]
        numbers = [value for _, value in shown]
        axes.barh(positions, numbers, height, label=what, color=COLOURS[number % len(COLOURS)])
        for position, value in shown:
            axes.text(value, position, f" {value:.3g}", va="center", fontsize=8)
    largest = max((v for values in series.values() for v in values if v is not None), default=1)
    axes.set_xlim(0, max(largest, target or 0) * 1.18)  # room for the numbers
    axes.set_yticks([row + height * (len(series) - 1) / 2 for row in range(len(labels))])
    axes.set_yticklabels(labels)
    axes.invert_yaxis()
    axes.set_xlabel(unit)
    if target is not None:
        axes.axvline(target, color="#c53030", linestyle="--", linewidth=1, label="target")
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3)
    figure.tight_layout()
    IMAGES.mkdir(parents=True, exist_ok=True)
    figure.savefig(IMAGES / f"bench-{name}.png", dpi=110)
    plt.close(figure)
    print(f"(chart: docs/img/bench-{name}.png)")
