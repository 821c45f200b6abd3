"""Where ``train`` and ``evaluate`` read examples: one resolver for every ``--data`` layout.

Why: an ML engineer's examples are as likely to be a Hugging Face ``datasets`` dataset as
a ``commer-pipeline prepare`` folder; both should work without a conversion step. Layouts,
tried in this order:

* an examples ``.parquet`` file: one set of examples, no splits;
* a ``datasets`` ``save_to_disk`` folder: a ``DatasetDict`` (``dataset_dict.json``, a
  folder per split) or one ``Dataset`` (``state.json``: no splits);
* ``prepare`` output: ``SPLIT.parquet`` files at the top (its ``corpus/`` is not examples);
* any other folder of Parquet files, split by file and folder names the way
  ``datasets.load_dataset(FOLDER)`` splits them (``data/train-00000-of-00001.parquet``,
  ``dev/part-0.parquet``, ...; files with no split name are ``train``).

``dev`` and ``validation`` (also ``valid``, ``val``) name the same split. Every table's
columns are checked (:func:`~commer_core.data.examples.check_example_columns`). Not
re-exported by ``commer_core.data``: importing ``datasets`` takes seconds, and only the
``train`` and ``evaluate`` commands need it, for the two layouts it names (a Parquet dataset
folder, a ``save_to_disk`` folder); a ``prepare`` output or an examples file is read without it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from commer_core.data.examples import (
    DataFormatError,
    Example,
    check_example_columns,
    examples_from_batches,
    read_examples_parquet,
)

DEV_NAMES = ("dev", "validation", "valid", "val")
UNSPLIT = ""  # the one split of a layout without splits
_PREPARE_SPLITS = ("train", "test", *DEV_NAMES)
_BATCH_ROWS = 512


def split_names(split: str) -> tuple[str, ...]:
    """The names a requested split may have on disk (``dev`` is also ``validation`` and so on)."""
    return DEV_NAMES if split in DEV_NAMES else (split,)


@dataclass(frozen=True)
class ExampleData:
    """A ``--data`` location resolved once: its layout and where each split's examples are."""

    location: str
    layout: str
    splits: Mapping[str, tuple[str, ...]]  # split -> Parquet files, or (save_to_disk folder,)
    saved: bool = False  # the splits are datasets save_to_disk folders

    @property
    def unsplit(self) -> bool:
        """One set of examples (a file, a saved Dataset): ``train`` reads it and has no dev split."""
        return set(self.splits) == {UNSPLIT}

    def split_name(self, split: str) -> str | None:
        if self.unsplit:
            return UNSPLIT
        return next((name for name in split_names(split) if name in self.splits), None)

    def has(self, split: str) -> bool:
        return self.split_name(split) is not None

    def describe(self, split: str) -> str:
        """Where ``split`` is read from, for results: its one file, else the location and split name."""
        name = self.split_name(split)
        paths = self.splits.get(name, ()) if name is not None else ()
        return paths[0] if len(paths) == 1 and not self.saved else f"{self.location} [{name or split}]"

    def read(self, split: str) -> list[Example]:
        """Every example of ``split``; :class:`DataFormatError` if there is no such split."""
        name = self.split_name(split)
        if name is None:
            raise DataFormatError(
                f"{self.location} ({self.layout}) has no {split!r} split (it has {', '.join(sorted(self.splits))})")
        if self.saved:
            return _read_saved_dataset(self.splits[name][0])
        return [example for path in self.splits[name] for example in read_examples_parquet(path)]


def open_examples(data: str | Path) -> ExampleData:
    """Resolve ``data`` (see the module docstring); :class:`DataFormatError` when it holds no examples."""
    data = Path(data)
    if data.is_file():
        return ExampleData(str(data), "examples file", {UNSPLIT: (str(data),)})
    if not data.is_dir():
        raise DataFormatError(f"{data}: no such file or folder")
    if (data / "dataset_dict.json").is_file():
        splits = json.loads((data / "dataset_dict.json").read_text(encoding="utf-8"))["splits"]
        return ExampleData(str(data), "datasets save_to_disk DatasetDict",
                           {name: (str(data / name),) for name in splits}, saved=True)
    if (data / "state.json").is_file():
        return ExampleData(str(data), "datasets save_to_disk Dataset", {UNSPLIT: (str(data),)}, saved=True)
    top = {path.stem: (str(path),) for path in sorted(data.glob("*.parquet"))}
    if any(name in top for name in _PREPARE_SPLITS):
        return ExampleData(str(data), "prepare output", top)
    return ExampleData(str(data), "Parquet dataset folder", _parquet_splits(data))


def _parquet_splits(data: Path) -> dict[str, tuple[str, ...]]:
    """Split -> Parquet files of a folder, by ``datasets``' own naming rules."""
    from datasets.data_files import DataFilesDict, EmptyDatasetError, get_data_patterns

    try:
        files = DataFilesDict.from_patterns(get_data_patterns(str(data)), base_path=str(data))
    except (EmptyDatasetError, FileNotFoundError) as exc:
        raise DataFormatError(f"{data}: no examples there (no .parquet file; {exc})") from exc
    splits = {str(name): tuple(f for f in paths if f.endswith(".parquet")) for name, paths in files.items()}
    splits = {name: paths for name, paths in splits.items() if paths}
    if not splits:
        raise DataFormatError(f"{data}: no examples there (no .parquet file)")
    return splits


def _read_saved_dataset(folder: str) -> list[Example]:
    """One ``Dataset.save_to_disk`` folder, read through ``datasets`` (memory-mapped Arrow)."""
    import datasets

    dataset = datasets.load_from_disk(folder)
    if not isinstance(dataset, datasets.Dataset):
        raise DataFormatError(f"{folder}: a datasets folder of several splits; pass its parent folder")
    columns = check_example_columns(dataset.data.schema, folder)
    table = dataset.select_columns(columns).with_format("arrow")
    return list(examples_from_batches(table.iter(batch_size=_BATCH_ROWS)))


def load_train_dev(data: str | Path) -> tuple[list[Example], list[Example] | None]:
    """``train``'s examples: (train, dev), dev None when ``data`` has no dev split."""
    source = open_examples(data)
    if source.unsplit:
        return source.read("train"), None
    if not source.has("train"):
        raise DataFormatError(
            f"{data} ({source.layout}) has no train split (it has {', '.join(sorted(source.splits))}); run "
            "`commer-pipeline prepare` or pass a datasets folder with a train split")
    return source.read("train"), source.read("dev") if source.has("dev") else None
