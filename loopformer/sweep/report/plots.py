"""The report's pictures: the Pareto front, parameter importance, and parallel coordinates with a compute axis."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from loopformer.checkpoint import atomic
from loopformer.sweep.report.records import counted

STATE_MARKERS = {"finished": ("o", "finished"), "stopped": ("v", "stopped early"), "crashed": ("x", "crashed")}


def _pyplot():  # noqa: ANN202 (matplotlib.pyplot)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


EVALUATION_COMPUTE = ("FLOPs per puzzle (forward, at the best report)", "compute")
TRAINING_COMPUTE = ("training FLOPs behind the best report (forward + backward)", "training compute")


def plot_pareto(
    runs: list, front: list, metric: str, path: Path, x: Any = None, x_label: tuple[str, str] = EVALUATION_COMPUTE
) -> None:
    """Metric against a cost (log x; by default FLOPs per puzzle), one marker per run state, the front as a step line.
    ``x(run)``: the run's cost, or None."""
    plt = _pyplot()
    x = x or (lambda r: r.flops_per_puzzle)
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    costed = [r for r in runs if x(r) is not None]
    for state, (marker, label) in STATE_MARKERS.items():
        pts = [r for r in costed if r.state == state]
        if pts:
            ax.scatter([x(r) for r in pts], [r.best for r in pts], marker=marker, s=36, color="0.55", label=label)
    if front:
        xs = [x(r) for r in front]
        ys = [r.best for r in front]
        if len(front) > 1:  # the best metric at each budget, between the front's runs (not beyond the last)
            ax.step(xs, ys, where="post", color="C3", lw=1.4)
        ax.scatter(xs, ys, s=70, facecolors="none", edgecolors="C3", linewidths=1.8, label="Pareto front", zorder=3)
        for r in front:
            ax.annotate(r.name, (x(r), r.best), textcoords="offset points", xytext=(5, -11), fontsize=7)
    ax.set_xscale("log")
    if costed:
        _sensible_limits(ax, [x(r) for r in costed], [r.best for r in costed])
    title = f"{metric} against {x_label[1]} ({counted(len(costed), 'run')} with a FLOPs count)"
    _log_axis_with_grid(ax, x_label[0], f"best {metric}", title, 8)
    _save(plt, fig, path)


def _save(plt, fig, path: Path) -> None:  # noqa: ANN001 (matplotlib's pyplot and Figure)
    """Laid out, written atomically (in the format the suffix names), closed."""
    fig.tight_layout()
    atomic.write_with(path, lambda tmp: fig.savefig(tmp, dpi=110, format=Path(path).suffix[1:] or "png"))
    plt.close(fig)


def _log_axis_with_grid(ax, x_label: str, y_label: str, title: str, legend_size: int) -> None:  # noqa: ANN001
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=legend_size, loc="lower right")


def _sensible_limits(ax, xs: list[float], ys: list[float]) -> None:  # noqa: ANN001 (a matplotlib Axes)
    """Axes that fit a few runs: a single budget gets a decade around it (log x), and a metric within 0..1 (an
    accuracy) is never drawn outside 0..1, however few values there are."""
    lo, hi = min(xs), max(xs)
    if hi <= lo * 1.5:
        ax.set_xlim(lo / 3, hi * 3)
    y_lo, y_hi = min(ys), max(ys)
    pad = max(0.05 * (y_hi - y_lo), 0.02)
    bottom, top = y_lo - pad, y_hi + pad
    if 0.0 <= y_lo and y_hi <= 1.0:
        bottom, top = max(0.0, bottom), min(1.0, top)
        if top - bottom < 0.1:  # one value, or values that coincide: a window of 0.1 around them, within 0..1
            middle = min(max((y_lo + y_hi) / 2, 0.05), 0.95)
            bottom, top = middle - 0.05, middle + 0.05
        bottom, top = bottom - 0.005, top + 0.005  # markers on 0 or 1 stay whole
    ax.set_ylim(bottom, top)


def target_title(target: str, metric: str) -> str:
    """An importance target named after the metric: ``metric per GFLOP`` -> ``val/exact_accuracy per GFLOP``."""
    return target.replace("metric", metric, 1)


def plot_importance(importance: dict[str, list], path: Path, metric: str = "metric") -> None:
    """One panel per target: importance bars, coloured by the sign of the correlation (grey: categorical)."""
    plt = _pyplot()
    targets = list(importance)
    n = max(len(v) for v in importance.values())
    fig, axes = plt.subplots(1, len(targets), figsize=(5.2 * len(targets), 0.45 * n + 1.6), squeeze=False)
    for ax, target in zip(axes[0], targets, strict=True):
        effects = importance[target][::-1]
        colours = ["0.6" if e.correlation is None else ("C2" if e.correlation > 0 else "C3") for e in effects]
        ax.barh(range(len(effects)), [e.importance for e in effects], color=colours)
        ax.set_yticks(range(len(effects)))
        ax.set_yticklabels([short_name(e.parameter) for e in effects], fontsize=8)
        for i, e in enumerate(effects):
            corr = "" if e.correlation is None else f"  r={e.correlation:+.2f}"
            ax.text(e.importance, i, f" {e.importance:.2f}{corr}", va="center", fontsize=7)
        ax.set_xlim(0, 1.15)
        ax.set_xlabel("permutation importance (sums to 1)")
        ax.set_title(f"importance for {target_title(target, metric)}\n(green: r > 0, red: r < 0)", fontsize=9)
    _save(plt, fig, path)


def short_name(parameter: str) -> str:
    return parameter.replace("model.arch.stages.", "stage ").replace("model.arch.", "").replace("model.optim.", "")


def _axis_values(values: list[Any]) -> tuple[list[Optional[float]], Optional[list[str]]]:
    """Numbers as they are; anything else mapped to the index of its label (sorted), returned for tick labels."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return [None if v is None else float(v) for v in values], ["False", "True"]
    if all(isinstance(v, (bool, int, float)) for v in present):
        return [None if v is None else float(v) for v in values], None
    labels = sorted({str(v) for v in present})
    return [None if v is None else float(labels.index(str(v))) for v in values], labels


def plot_parallel_coordinates(lines: list[dict], axes: list[str], metric: str, path: Path) -> None:
    """One line per run across ``axes`` (parameters, then compute, then the metric), coloured by the metric;
    dashed when the run did not finish. A line lacks only the axes it has no value for. ``lines`` hold the axis
    values and ``state``."""
    plt = _pyplot()
    scored = [r for r in lines if r.get(metric) is not None]
    if not scored or not axes:
        return
    columns = {a: _axis_values([r.get(a) for r in scored]) for a in axes}
    lo = {a: min((v for v in columns[a][0] if v is not None), default=0.0) for a in axes}
    hi = {a: max((v for v in columns[a][0] if v is not None), default=1.0) for a in axes}
    fig, ax = plt.subplots(figsize=(1.8 * len(axes) + 2, 4.5))
    cmap = plt.get_cmap("viridis")
    m_lo, m_hi = lo[metric], hi[metric]
    if m_lo == m_hi:  # every run scored the same: a colour bar over 0..1 for an accuracy, else around the value
        m_lo, m_hi = (0.0, 1.0) if 0.0 <= m_lo <= 1.0 else (m_lo - abs(m_lo) / 2 - 1, m_hi + abs(m_hi) / 2 + 1)
    order = sorted(range(len(scored)), key=lambda i: scored[i][metric])
    for i in order:
        values = [(j, a, columns[a][0][i]) for j, a in enumerate(axes)]
        points = [(j, (v - lo[a]) / ((hi[a] - lo[a]) or 1)) for j, a, v in values if v is not None]
        colour = cmap((scored[i][metric] - m_lo) / ((m_hi - m_lo) or 1))
        style = "-" if scored[i].get("state") == "finished" else "--"
        ax.plot([x for x, _ in points], [y for _, y in points], color=colour, alpha=0.85, lw=1.6, ls=style)
    ax.set_xticks(range(len(axes)))
    ax.set_xticklabels([short_name(a) for a in axes], rotation=20, ha="right")
    for j, a in enumerate(axes):
        ax.axvline(j, color="0.7", lw=0.8)
        labels = columns[a][1]
        if labels:  # categorical (booleans too): every label at its place
            for k, label in enumerate(labels):
                y = (k - lo[a]) / ((hi[a] - lo[a]) or 1)
                if -0.01 <= y <= 1.01:
                    ax.text(j + 0.04, y, label, fontsize=7, va="center", color="0.25", zorder=5,
                            bbox=dict(facecolor="white", edgecolor="none", pad=0.6, alpha=0.85))  # fmt: skip
            continue
        top, bottom = f"{hi[a]:.3g}", f"{lo[a]:.3g}"
        ax.text(j, 1.03, top, ha="center", fontsize=8)
        ax.text(j, -0.08, bottom, ha="center", fontsize=8)
    ax.set_yticks([])
    ax.set_ylim(-0.12, 1.1)
    ax.set_title(f"{counted(len(scored), 'run')}, colour = {metric} (dashed: stopped early or crashed)")
    fig.colorbar(plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(m_lo, m_hi)), ax=ax, label=metric)
    _save(plt, fig, path)


def plot_learning_curves(curves: dict[str, list[tuple[float, float]]], states: dict[str, str], metric: str,
                         path: Path, budget: Optional[float] = None) -> None:  # fmt: skip
    """Every run's metric against the training FLOPs behind it (log x): learning curves at equal compute, dashed
    for runs that did not finish, the equal-compute budget as a vertical line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    drawn = {name: curve for name, curve in curves.items() if curve}
    finals = {name: curve[-1][1] for name, curve in drawn.items()}
    labelled = set(sorted(finals, key=finals.get, reverse=True)[:8])  # a legend of the 8 best ends, not of 100 runs
    for k, (name, curve) in enumerate(sorted(drawn.items())):
        style = "-" if states.get(name) == "finished" else "--"
        ax.plot([p[0] for p in curve], [p[1] for p in curve], style, marker="o", ms=3, lw=1.3, color=f"C{k % 10}",
                label=name if name in labelled else None)  # fmt: skip
    if budget is not None:
        ax.axvline(budget, color="0.4", lw=0.9, ls=":", label="compute every ranked run reached")
    ax.set_xscale("log")
    if drawn:
        _sensible_limits(ax, [p[0] for c in drawn.values() for p in c], [p[1] for c in drawn.values() for p in c])
    title = f"{metric} against training compute ({counted(len(drawn), 'run')}; dashed: stopped early or crashed)"
    _log_axis_with_grid(ax, "training FLOPs (forward + backward, all processes)", metric, title, 7)
    _save(plt, fig, path)
