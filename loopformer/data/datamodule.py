"""LightningDataModule over a puzzle dataset directory, optionally generating a small one first."""

from __future__ import annotations

import fcntl
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Optional, Union

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader

from loopformer.data.builders import how_to_build
from loopformer.data.common import build_then_move, is_built, remove_half_built, split_hint
from loopformer.data.format import DatasetError, PuzzleDatasetMetadata, load_merged
from loopformer.data.generators import Generator
from loopformer.data.generators.record import disagreement
from loopformer.data.sampling import SAMPLER_POSITION, EvalBatches, TrainBatches, batch_split_problem
from loopformer.files import load_json

# Lightning warns that an IterableDataset with __len__ may repeat batches across loader workers; ours deal the
# batches out to the workers in turn (sampling.py), so it does not apply.
warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined", category=UserWarning)
# Lightning warns that a resume mid-epoch is unreliable unless the DataLoader itself keeps state; the position
# lives in this data module's state_dict instead, and a resumed run is bitwise the uninterrupted one (test_resume).
warnings.filterwarnings("ignore", message=r"You're resuming from a checkpoint that ended before the epoch ended")


@contextmanager
def generating(data_path: Path) -> Iterator[None]:
    """Held while a dataset is generated at ``data_path``: runs that start together on one machine or shared
    filesystem (a sweep's trials) generate it once, the others waiting for it, instead of each building a copy and
    failing to rename it over the first. The half-built copies of a generation that was killed are removed. The
    lock file goes once the dataset exists: a run that finds the dataset never takes the lock."""
    lock_path = data_path.parent / f".{data_path.name}.generate.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            rank_zero_info(f"Waiting for another run generating {data_path.resolve()} ...")
            fcntl.flock(fd, fcntl.LOCK_EX)
        remove_half_built(data_path)
        yield
        if is_built(data_path):
            lock_path.unlink(missing_ok=True)
    finally:
        os.close(fd)


class PuzzleDataModule(L.LightningDataModule):
    def __init__(
        self,
        data_paths: Union[str, list[str]] = "data/sudoku-extreme-1k-aug-1000",
        global_batch_size: int = 768,
        eval_batch_size: Optional[int] = None,
        seed: int = 0,
        epochs_per_iter: int = 1,
        num_workers: int = 0,
        prefetch: int = 2,
        generate: Optional[Generator] = None,
    ) -> None:
        """
        Args:
            data_paths: Dataset directory in the HRM/TRM layout (``train/`` and ``test/``), or a list of them,
                merged as HRM/TRM merge them (puzzle identifiers offset per path).
            global_batch_size: Training examples per optimizer step, summed over all processes (a multiple of
                their number: each takes an equal share).
            eval_batch_size: Evaluation examples per step over all processes, a multiple of their number
                (default: global_batch_size).
            seed: Seed of the training order.
            epochs_per_iter: Passes over the training groups per Lightning epoch (HRM/TRM's eval_interval
                when evaluating every epoch; one pass of a small set is often less than one global batch).
            num_workers: DataLoader worker processes collating batches in turn (0 collates in the training
                process); the batches and their order are the same with any number.
            prefetch: Training batches prepared ahead in a background thread when ``num_workers`` is 0 (pinned
                on a GPU), so the step never waits for its batch; 0 prepares each batch when it is asked for.
                The batches, their order and a resume are the same with any value.
            generate: Build a generated dataset at the first of ``data_paths`` if it is missing; where one is
                there, it must be what these settings generate (null: use it as it is).
        """
        super().__init__()
        self.data_paths = [Path(p) for p in ([data_paths] if isinstance(data_paths, (str, Path)) else data_paths)]
        if not self.data_paths:
            raise DatasetError("data.data_paths is empty: give at least one dataset directory.")
        self.data_path = self.data_paths[0]  # where data.generate builds
        for key, value, low, must in (
            ("global_batch_size", global_batch_size, 1, "an integer >= 1 (examples per optimizer step, all processes)"),
            ("eval_batch_size", eval_batch_size, 1, "an integer >= 1 (examples per evaluation step), or null"),
            ("epochs_per_iter", epochs_per_iter, 1, "an integer >= 1 (passes over the training groups per epoch)"),
            ("num_workers", num_workers, 0, "an integer >= 0 (DataLoader worker processes)"),
        ):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
                raise DatasetError(f"data.{key}={value!r}: expected {must}.")
        self.global_batch_size = global_batch_size
        self.eval_batch_size = eval_batch_size or global_batch_size
        self._eval_batch_size_given = eval_batch_size is not None
        self.seed = seed
        self.epochs_per_iter = epochs_per_iter
        self.num_workers = num_workers
        if prefetch < 0:
            raise DatasetError(f"data.prefetch must be >= 0 (batches prepared ahead), got {prefetch}.")
        self.prefetch = prefetch
        if generate is not None:
            generate.check()
        self.generate = generate
        self.train_batches: Optional[TrainBatches] = None
        self._sampler_state: Optional[dict] = None

    # ------------------------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        if self.generate is None:
            return
        if is_built(self.data_path):
            self._check_generated()
            return
        g = self.generate
        target = self.data_path.resolve()
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise DatasetError(
                f"data.data_paths {target} exists and is not a dataset (no train/dataset.json); data.generate builds "
                "only where nothing is: point data.data_paths at a new directory."
            )
        self.data_path.parent.mkdir(parents=True, exist_ok=True)
        with generating(self.data_path):
            if is_built(self.data_path):  # built by the run that generated it first
                rank_zero_info(f"{target}: generated by another run meanwhile; this run uses it.")
                self._check_generated()
                return
            rank_zero_info(f"Generating {g.describe()} into {target} ...")
            summary = build_then_move(self.data_path, g.build)
        rank_zero_info(g.describe_result(summary))

    def check_paths(self) -> None:
        """Every data path holds train/ and test/, or is the first one and data.generate builds it: checked before
        a run starts anything (its logger's run, its processes), so that a wrong path leaves nothing behind."""
        for i, path in enumerate(self.data_paths):
            if i == 0 and self.generate is not None and not is_built(path):
                continue  # prepare_data builds it (or says why it cannot)
            for name in ("train", "test"):
                self._check_split(path, name)
        if self.generate is not None and is_built(self.data_path):
            self._check_generated()

    def _check_generated(self) -> None:
        """A dataset that data.generate did not build as it is configured now (other settings, another kind) is not
        trained on under its name: the run's config would say it trained on other data than it did."""
        differences = disagreement(self.generate, self.data_path)
        if differences:
            settings = ", ".join(f"{k}={v!r}" for k, v in asdict(self.generate).items())
            raise DatasetError(
                f"data.generate asks for {self.generate.kind} with {settings}, but {self.data_path.resolve()} holds "
                f"a dataset generated otherwise ({', '.join(differences)} there): this run would use that data with "
                "data.generate's settings in its config. Point data.data_paths at a new directory to generate the data "
                "there, delete this one to generate it anew, or set data.generate to null (--data.generate=null) to "
                "use it as it is."
            )

    def _check_split(self, path: Path, name: str) -> None:
        if not (path / name).is_dir():
            hint = " (or set data.generate to build a generated dataset there)" if self.generate is None else ""
            build = how_to_build(str(path)) if not path.exists() else ""
            raise DatasetError(
                f"{path / name}: dataset split not found; data.data_paths must hold train/ and test/{hint}."
                + (f" `{build}` builds it as the HRM/TRM recipes have it." if build else "")
                + split_hint(path)
            )

    def _split(self, name: str):
        for path in self.data_paths:
            self._check_split(path, name)
        return load_merged([path / name for path in self.data_paths])

    @property
    def metadata(self) -> PuzzleDatasetMetadata:
        if not hasattr(self, "_train_meta"):
            self.prepare_data()
            self._train_meta, self._train_sets = self._split("train")
        return self._train_meta

    @property
    def dims(self) -> dict[str, int]:
        """Model sizes that come from the dataset."""
        meta = self.metadata
        return {
            "vocab_size": meta.vocab_size,
            "seq_len": meta.seq_len,
            "num_puzzle_identifiers": meta.num_puzzle_identifiers,
        }

    @property
    def arc_sets(self) -> list:
        """The ARC builds among the data paths (those with ``test_puzzles.json``), for the ARC metric: names,
        original test puzzles, and where their puzzle identifiers start in the merged test split."""
        from loopformer.data.builders.arc import ARCSet

        if not hasattr(self, "_arc_sets"):
            sets, offset = [], 0
            for root in self.data_paths:
                if (root / "test_puzzles.json").is_file():
                    sets.append(
                        ARCSet(
                            root.name,
                            load_json(
                                root / "identifiers.json", DatasetError, "the ARC build's puzzle identifier names"
                            ),
                            load_json(
                                root / "test_puzzles.json", DatasetError, "the ARC build's original test puzzles"
                            ),
                            offset,
                        )
                    )
                test_meta = load_json(root / "test" / "dataset.json", DatasetError, "the test split's metadata")
                offset += int(test_meta.get("num_puzzle_identifiers", 0)) if isinstance(test_meta, dict) else 0
            names = [s.name for s in sets]
            for i, s in enumerate(sets):  # set names label metrics: make repeated directory names distinct
                if names.count(s.name) > 1:
                    s.name = f"{s.name}-{i}"
            self._arc_sets = sets
        return self._arc_sets

    def check_before_start(self, stage: str) -> None:
        """What a run would otherwise find only once it has started (its W&B run, its directory): the paths, and
        where the data is there already (not still to generate), that its splits agree and that training fills a
        batch. Sets ``batches_per_epoch`` where that is known before the run (fit, data there, a fixed count)."""
        self.batches_per_epoch: Optional[int] = None
        self.check_paths()
        if self.is_built():
            self._load_test_split()
            if stage == "fit":
                plan = TrainBatches(
                    self.metadata, self._train_sets, self.global_batch_size, 0, 1, self.seed, self.epochs_per_iter
                )
                self._check_fills_a_batch(plan)
                try:
                    self.batches_per_epoch = len(plan)
                except TypeError:  # it varies with the puzzles drawn
                    pass

    def check_batches_split(self, stage: str, world_size: int) -> None:
        """Every batch is shared evenly by the run's processes: checked once the Trainer knows how many, before they
        start (in them it would be a traceback per rank)."""
        sizes = [("data.global_batch_size", self.global_batch_size)] if stage == "fit" else []
        eval_setting = "data.eval_batch_size" if self._eval_batch_size_given else "data.eval_batch_size (its default)"
        sizes.append((eval_setting, self.eval_batch_size))
        for setting, size in sizes:
            problem = batch_split_problem(setting, size, world_size)
            if problem:
                raise DatasetError(problem)

    def is_built(self) -> bool:
        """Every data path holds its dataset (none is still to generate)."""
        return all(is_built(path) for path in self.data_paths)

    def _load_test_split(self) -> None:
        if hasattr(self, "_test_meta"):
            return
        meta = self.metadata
        self._test_meta, self._test_sets = self._split("test")
        for key in ("seq_len", "vocab_size", "pad_id", "ignore_label_id"):
            a, b = getattr(meta, key), getattr(self._test_meta, key)
            if a != b:
                raise DatasetError(f"{self.data_path}: train and test disagree on {key} ({a} vs {b}) in dataset.json.")

    def _check_fills_a_batch(self, batches: TrainBatches) -> None:
        if not batches.has_a_full_batch():
            groups = sum(s.group_indices.size - 1 for s in self._train_sets.values())
            raise DatasetError(
                f"{', '.join(map(str, self.data_paths))}: one pass over the {groups} training groups (x data.epochs_per_iter="
                f"{self.epochs_per_iter}) does not fill one batch of data.global_batch_size={self.global_batch_size}; "
                "lower the batch size or raise data.epochs_per_iter."
            )

    def setup(self, stage: str) -> None:
        meta = self.metadata
        self._load_test_split()
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        if self.train_batches is None:
            self.train_batches = TrainBatches(
                meta, self._train_sets, self.global_batch_size, rank, world, self.seed, self.epochs_per_iter
            )
            if self._sampler_state is not None:
                self.train_batches.load_state_dict(self._sampler_state)
        self.train_batches.prefetch = self.prefetch if self.num_workers == 0 else 0
        self.train_batches.pin_memory = self._on_cuda
        if stage == "fit":
            self._check_fills_a_batch(self.train_batches)
        self.eval_batches = EvalBatches(self._test_meta, self._test_sets, self.eval_batch_size, rank, world)

    @property
    def _on_cuda(self) -> bool:
        return self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"

    def _loader(self, dataset, pin_memory: bool = False) -> DataLoader:
        # Its own generator: creating an iterator then draws nothing from torch's global random stream,
        # which ACT exploration uses (a resumed run must see the same stream as an uninterrupted one).
        return DataLoader(
            dataset,
            batch_size=None,
            num_workers=self.num_workers,
            pin_memory=pin_memory,
            generator=torch.Generator(),
        )

    def train_dataloader(self) -> DataLoader:
        # Without workers, the prefetch thread pins (the loader would pin in the training thread).
        return self._loader(self.train_batches, pin_memory=self._on_cuda and self.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.eval_batches)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.eval_batches)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.eval_batches)

    def teardown(self, stage: str) -> None:
        from loopformer.data.prefetch import stop_all

        if self.train_batches is not None:
            stop_all(owner=self.train_batches)  # no batch-preparing thread outlives the run; other runs' go on

    def on_before_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """A training batch about to be trained on: its position becomes the sampler's resume point."""
        position = batch.pop(SAMPLER_POSITION, None)
        if position is not None and self.train_batches is not None:
            self.train_batches.mark_trained(position)
        return batch

    # ------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"sampler": self.train_batches.state_dict()} if self.train_batches is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if "sampler" in state:
            self._sampler_state = state["sampler"]
            if self.train_batches is not None:
                self.train_batches.load_state_dict(state["sampler"])
