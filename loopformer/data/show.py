"""Pictures of puzzles: terminal text and PNG, for datasets and for predictions next to their labels."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np

from loopformer.data.common import CHARSET as MAZE_CHARS
from loopformer.data.format import PuzzleDatasetMetadata
from loopformer.data.kinds import dataset_kind


def to_text(tokens: np.ndarray, kind: str, labels: Optional[np.ndarray] = None) -> str:
    """One puzzle as text; with ``labels``, wrong cells of a prediction are marked with '!'."""
    tokens = np.asarray(tokens)
    side = math.isqrt(tokens.size)
    if kind == "sequence":
        return " ".join(str(t) for t in tokens)
    grid = tokens.reshape(side, side)
    wrong = (grid != labels.reshape(side, side)) if labels is not None else np.zeros_like(grid, dtype=bool)
    lines = []
    if kind == "sudoku":
        box_r = max(r for r in range(1, math.isqrt(side) + 1) if side % r == 0)
        box_c = side // box_r
        for r in range(side):
            if r and r % box_r == 0:
                lines.append("-" * (2 * side + 2 * (side // box_c - 1) - 1))
            cells = []
            for c in range(side):
                if c and c % box_c == 0:
                    cells.append("|")
                t = int(grid[r, c])
                cells.append("." if t <= 1 else str(t - 1) if t - 1 < 10 else chr(ord("A") + t - 11))
                if wrong[r, c]:
                    cells[-1] = "!"
            lines.append(" ".join(cells))
        return "\n".join(lines)
    for r in range(side):
        if kind == "maze":
            row = "".join(MAZE_CHARS[t - 1] if 1 <= t <= 5 else " " for t in grid[r])
        elif kind == "arc":  # the colours 0-9 (tokens 2-11); '+' the end-of-grid marker (token 1)
            row = "".join(" " if t == 0 else "+" if t == 1 else _one_char(int(t) - 2) for t in grid[r])
        else:
            row = "".join(" " if t == 0 else _one_char(int(t)) for t in grid[r])
        lines.append("".join("!" if w else ch for ch, w in zip(row, wrong[r], strict=True)))
    return "\n".join(lines)


def _one_char(value: int) -> str:
    """0-9, then A-Z, then '?': every cell one character wide."""
    return str(value) if value < 10 else chr(ord("A") + value - 10) if value < 36 else "?"


# ARC's ten colours (black, blue, red, green, yellow, grey, magenta, orange, sky, maroon) after pad/eos.
ARC_PALETTE = [
    "#000000",
    "#0074D9",
    "#FF4136",
    "#2ECC40",
    "#FFDC00",
    "#AAAAAA",
    "#F012BE",
    "#FF851B",
    "#7FDBFF",
    "#870C25",
]


COLOUR_KEYS = {"maze": "green: the start, red: the goal, blue: the path"}  # the maze palette below
WRONG_CELLS = {
    "sudoku": "red: a digit that differs from the label; a red ? a blank the label fills",
    "other": "red x: a cell that differs from the label",
}


def save_png(
    panels: list[tuple[str, np.ndarray, str, Optional[np.ndarray]]], path: Path, cols: int = 2, title: str = ""
) -> None:
    """``panels``: (title, tokens, kind, labels-or-None); one picture per panel, ``cols`` to a row, under ``title``.
    With labels, cells that differ from them are marked in red, and the title says how."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (panel_title, tokens, kind, labels) in zip(axes.ravel(), panels, strict=False):
        side = math.isqrt(tokens.size)
        grid = tokens.reshape(side, side).astype(int)
        ax.set_title(panel_title, fontsize=9)
        if kind == "sudoku":
            ax.imshow(np.ones_like(grid), cmap="gray", vmin=0, vmax=1)
            for r in range(side):
                for c in range(side):
                    t = grid[r, c]
                    bad = labels is not None and labels.reshape(side, side)[r, c] != t
                    if t > 1 or bad:  # a wrongly predicted blank shows as a red "?"
                        ax.text(
                            c,
                            r,
                            str(t - 1) if t > 1 else "?",
                            ha="center",
                            va="center",
                            fontsize=max(6, 80 // side),
                            color="red" if bad else "black",
                        )
            box_r = max(r for r in range(1, math.isqrt(side) + 1) if side % r == 0)
            for k in range(side + 1):
                ax.axhline(k - 0.5, color="black", lw=1.6 if k % box_r == 0 else 0.4)
                ax.axvline(k - 0.5, color="black", lw=1.6 if k % (side // box_r) == 0 else 0.4)
        else:
            palette = (
                ["#FFFFFF", "#DDDDDD"] + ARC_PALETTE
                if kind in ("arc", "grid")
                else ["#FFFFFF", "#222222", "#FFFFFF", "#2ECC40", "#FF4136", "#0074D9"]
            )
            ax.imshow(grid, cmap=ListedColormap(palette), vmin=0, vmax=len(palette) - 1, interpolation="nearest")
            if labels is not None:
                ys, xs = np.nonzero(grid != labels.reshape(side, side))
                ax.scatter(xs, ys, marker="x", color="red", s=8)
    key = COLOUR_KEYS.get(panels[0][2], "") if panels else ""
    compared = [kind for _, _, kind, labels in panels if labels is not None]
    wrong = WRONG_CELLS.get(compared[0], WRONG_CELLS["other"]) if compared else ""
    title = "\n".join(t for t in (title, key, wrong) if t)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def default_picture_name(path: str | Path, split: str) -> str:
    """``data show data/sudoku6`` draws into ``./sudoku6_test_examples.png`` (the current directory, never the
    dataset's)."""
    return f"{Path(path).resolve().name}_{split}_examples.png"


def picture_path(out: Optional[str], path: str | Path, split: str) -> Path:
    """Where ``data show --out OUT`` draws: OUT itself for a .png name (its directory made), the default name inside
    OUT for a directory, OUT.png for a name without a suffix; the default name in the current directory without
    OUT."""
    from loopformer.data.format import DatasetError

    if out is None:
        return Path(default_picture_name(path, split))
    picture = Path(out)
    if picture.is_dir():
        return picture / default_picture_name(path, split)
    if picture.suffix == "":
        picture = picture.with_name(picture.name + ".png")
    elif picture.suffix.lower() != ".png":
        raise DatasetError(f"--out {out}: expected a .png file name or a directory (the picture is a PNG).")
    try:
        picture.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DatasetError(f"--out {out}: cannot make its directory {picture.parent} ({e.strerror}).") from None
    return picture


def show_dataset(
    path: str | Path, n: int = 4, split: str = "test", png: Optional[str | Path] = None, seed: int = 0
) -> str:
    """Text of ``n`` random examples (input and label); also a PNG when ``png`` is given, titled with the dataset and
    the split."""
    from loopformer.data.common import split_hint
    from loopformer.data.format import DatasetError, load_split

    if not (Path(path) / split).is_dir():
        what = "no such directory" if not Path(path).exists() else f"no {split}/ there"
        raise DatasetError(
            f"{path}: {what}; expected a dataset directory holding train/ and test/ (as `loopformer data build` "
            "writes it)." + split_hint(Path(path))
        )
    meta, sets = load_split(Path(path) / split)
    kind = dataset_kind(meta, Path(path))
    s = next(iter(sets.values()))
    rng = np.random.default_rng(seed)
    picks = rng.choice(s.num_examples, size=min(n, s.num_examples), replace=False)
    blocks, panels = [], []
    for i in sorted(picks):
        inputs, labels = np.asarray(s.inputs[i]), np.asarray(s.labels[i])
        blocks.append(f"example {i} input:\n{to_text(inputs, kind)}\n\nexample {i} label:\n{to_text(labels, kind)}\n")
        panels += [(f"#{i} input", inputs, kind, None), (f"#{i} label", labels, kind, None)]
    if png is not None:
        title = f"{path} ({kind}), {split} split: {len(picks)} of {s.num_examples} examples"
        save_png(panels, Path(png), title=title)
    return "\n".join(blocks)


def save_prediction_png(
    meta: PuzzleDatasetMetadata, inputs: np.ndarray, preds: np.ndarray, labels: np.ndarray, path: Path, title: str = ""
) -> bool:
    """Input, prediction (wrong cells in red, said in the title) and label of a few examples, one row each, under
    ``title`` (e.g. the evaluation and its step). Ignored label positions (-100) show as padding. Returns False when
    the data is not a square grid."""
    kind = dataset_kind(meta)
    if kind == "sequence":
        return False
    labels = np.where(labels < 0, meta.pad_id, labels)
    preds = np.where(preds >= meta.vocab_size, meta.pad_id, preds)  # DIS's mask token is no cell: drawn as padding
    preds = np.where(labels == meta.pad_id, meta.pad_id, preds)
    panels = []
    for i in range(inputs.shape[0]):
        wrong = int((preds[i] != labels[i]).sum())
        panels += [
            (f"input {i}", inputs[i], kind, None),
            (f"prediction {i} ({wrong} wrong)", preds[i], kind, labels[i]),
            (f"label {i}", labels[i], kind, None),
        ]
    path.parent.mkdir(parents=True, exist_ok=True)
    save_png(panels, path, cols=3, title=title)
    return True
