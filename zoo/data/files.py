"""A user's own data file as a dataset: ``--dataset PATH``.

The formats, each read as data (nothing in a file is run):

- ``.npz``: arrays ``train``, ``valid`` and ``test``; or one data array, split by the run's
  ``split_seed`` into the ``split`` fractions (valid, test; default 0.1 and 0.1);
- ``.npy``: one array, split the same way;
- ``.csv`` / ``.tsv``: numbers, one datum per line, with an optional header line naming the
  columns (told apart by holding something that is not a number); split the same way;
- a folder of images in torchvision's ``ImageFolder`` layout (``ROOT/CLASS/IMAGE.png``,
  :mod:`zoo.data.images`): 8-bit intensities, 256 levels, the class folders as labels.

An array ``[n, D]`` is n data of D values; ``[n]`` is n scalars; ``[n, H, W]`` (``[n, H, W, C]``)
are images, flattened to ``H*W`` (``H*W*C``) values per datum. ``uint8`` arrays are intensities
at 256 levels; ``--levels K`` declares integers 0..K-1 as intensities at K levels (checked).

**Covariates** (``--covariates age,dose``): per-datum inputs that are not data, named columns of a
CSV (it needs a header) or named arrays of an ``.npz`` (split alongside one data array, or
``NAME_train``, ``NAME_valid``, ``NAME_test`` beside ``train``/``valid``/``test``). They go into the
last columns of each row, and a model file that takes ``covariates=`` receives them there
(:mod:`zoo.models.pyro_model`).

**Safety.** ``np.load``'s pickles are never allowed; each ``.npy`` header is checked before its
data is allocated (:mod:`zoo.data.headers`); the file's size is checked against this machine's
memory before it is read. A truncated file, NaN or inf, a dtype that is not a number, a ragged
CSV, a header declaring more than the file holds, or an empty split is one line that says what to
fix. The file is read once: its SHA-256 is taken of the very bytes parsed, and recorded in the
run (:attr:`~zoo.data.dataset.Dataset.source`), so ``eval`` and ``--resume`` refuse a changed file.

Example::

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "counts.csv"
    >>> _ = path.write_text("a,b\\n" + "".join(f"{i % 3},{i % 5}\\n" for i in range(40)))
    >>> data = load_data_file(str(path))
    >>> data.train.shape, data.valid.shape, data.source["shape"]
    (torch.Size([32, 2]), torch.Size([4, 2]), [40, 2])
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from zoo.core.errors import ZooError
from zoo.data.dataset import SPLITS, Dataset, as_tensor, only_zeros_and_ones, split_indices
from zoo.data.headers import read_npy, read_npz_arrays

__all__ = ["FILE_SUFFIXES", "DEFAULT_SPLIT", "looks_like_path", "load_data_file", "read_file_bytes",
           "split_rows"]

#: The suffixes of the data files ``--dataset PATH`` reads (a folder is read as an image folder).
FILE_SUFFIXES = (".npz", ".npy", ".csv", ".tsv")
#: The valid and test fractions of a file holding one array.
DEFAULT_SPLIT = (0.1, 0.1)


def looks_like_path(name: str) -> bool:
    """Whether a ``--dataset`` value that is no registered name means a file or folder: it has a data file's
    suffix, a path separator, or names an existing folder."""
    return (Path(name).suffix.lower() in FILE_SUFFIXES or os.sep in name or "/" in name
            or Path(name).is_dir())


def read_file_bytes(path: Path, what: str = "data file") -> bytes:
    """The bytes of ``path``, after checking it is a regular file that fits this machine's memory."""
    from zoo.core.memory import human_bytes, memory_bytes
    if not path.exists():
        raise ZooError(f"{what} {str(path)!r} not found (relative paths start at {Path.cwd()})")
    if not path.is_file():
        raise ZooError(f"{what} {str(path)!r} is not a regular file")
    size = path.stat().st_size
    if 4 * size > memory_bytes():       # parsed numbers take up to 4 times a text file's bytes
        raise ZooError(f"{what} {str(path)!r} is {human_bytes(size)}, too large for this machine's "
                       f"{human_bytes(memory_bytes())} of memory")
    return path.read_bytes()


def load_data_file(path: str, covariates: Sequence[str] = (), split: Optional[Sequence[float]] = None,
                   split_seed: int = 0, levels: Optional[int] = None, **_) -> Dataset:
    """The :class:`~zoo.data.dataset.Dataset` of a user's file or image folder (see the module docstring).

    Arguments:
        path: the file (``.npz``, ``.npy``, ``.csv``, ``.tsv``) or image folder.
        covariates: names of CSV columns or ``.npz`` arrays that are per-datum inputs, not data.
        split: (valid, test) fractions for a file holding one array (default 0.1 and 0.1).
        split_seed: the seed of the random split of such a file.
        levels: declare the values intensities 0..levels-1 (checked).
    """
    p = Path(path)
    covariates = tuple(covariates or ())
    if p.is_dir():
        from zoo.data.images import read_image_folder
        if covariates:
            raise ZooError(f"{path} is an image folder; covariates are named columns of a .csv or arrays of an .npz")
        x, labels, image_shape, digest = read_image_folder(p)
        return _finished_dataset(p, digest, {"all": x}, {}, split, split_seed, levels if levels else 256,
                                 image_shape, labels=labels)
    suffix = p.suffix.lower()
    if suffix not in FILE_SUFFIXES:
        raise ZooError(f"{path}: a data file ends in {', '.join(FILE_SUFFIXES)}, or is a folder of images; "
                       f"convert it to one of these")
    raw = read_file_bytes(p)
    digest = hashlib.sha256(raw).hexdigest()
    if suffix == ".npz":
        data, covs = _read_npz(p, raw, covariates)
    elif suffix == ".npy":
        if covariates:
            raise ZooError(f"{path} holds one array, so it has no named covariates; name columns of a .csv or "
                           f"arrays of an .npz")
        data, covs = {"all": read_npy(io.BytesIO(raw), len(raw), str(p))}, {}
    else:
        data, covs = _read_table(p, raw, "\t" if suffix == ".tsv" else ",", covariates)
    image_shape = None
    first = next(iter(data.values()))
    if first.ndim == 3:
        image_shape = tuple(first.shape[1:])
    declared = levels if levels else (256 if first.dtype == np.uint8 else None)
    return _finished_dataset(p, digest, data, covs, split, split_seed, declared, image_shape,
                             covariate_names=covariates)


def _finished_dataset(path: Path, digest: str, data: Dict[str, np.ndarray], covs: Dict[str, Dict[str, np.ndarray]],
                      split: Optional[Sequence[float]], split_seed: int, levels: Optional[int],
                      image_shape=None, labels: Optional[np.ndarray] = None,
                      covariate_names: Sequence[str] = ()) -> Dataset:
    """The dataset of arrays read from ``path``: ``data`` is ``{"all": array}`` (split here by ``split_seed``)
    or ``{"train", "valid", "test"}``; ``covs`` maps each covariate's name to arrays keyed the same way.
    Checks every value is finite, no split is empty and ``levels`` holds; records the source."""
    shape = list(next(iter(data.values())).shape) if "all" in data else None
    flat = {k: _flatten(v, path, f"array {k!r}" if k != "all" else "data") for k, v in data.items()}
    cov_flat = {name: {k: _flatten(v, path, f"covariate {name!r}") for k, v in arrays.items()}
                for name, arrays in covs.items()}
    for k, a in flat.items():
        _refuse_nonfinite(a, path, "the data" if k == "all" else f"array {k!r}")
    for name, arrays in cov_flat.items():
        for k, a in arrays.items():
            _refuse_nonfinite(a, path, f"covariate {name!r}" + ("" if k == "all" else f" ({k} split)"))
    recorded = {}
    if "all" in flat:
        n = flat["all"].shape[0]
        rows = split_rows(n, split, split_seed, path)
        recorded = {"split": list(split if split is not None else DEFAULT_SPLIT), "split_seed": split_seed}
        flat = {s: flat["all"][r] for s, r in zip(SPLITS, rows)}
        cov_flat = {name: {s: arrays["all"][r] for s, r in zip(SPLITS, rows)} for name, arrays in cov_flat.items()}
        label_splits = {s: labels[r] for s, r in zip(SPLITS, rows)} if labels is not None else {}
    else:
        label_splits = {}
    for s in SPLITS:
        if flat[s].shape[0] == 0:
            raise ZooError(f"{path}: the {s} split is empty; give it rows (or, for one array, more rows or a "
                           f"larger --split fraction)")
        for name, arrays in cov_flat.items():
            if arrays[s].shape[0] != flat[s].shape[0]:
                raise ZooError(f"{path}: covariate {name!r} has {arrays[s].shape[0]} rows in the {s} split, the data "
                               f"{flat[s].shape[0]}; give one value (or row) per datum")
    dims = {flat[s].shape[1] for s in SPLITS}
    if len(dims) != 1:
        raise ZooError(f"{path}: the splits have different numbers of values per datum {sorted(dims)}")
    if levels is not None:
        _check_levels(flat, levels, path)
    binary = all(only_zeros_and_ones(flat[s]) for s in SPLITS)
    covariate_dim = sum(arrays["train"].shape[1] for arrays in cov_flat.values())
    rows = {s: np.concatenate([flat[s]] + [cov_flat[c][s] for c in covariate_names], axis=1)
            if covariate_names else flat[s] for s in SPLITS}
    shapes = {s: list(rows[s].shape) for s in SPLITS}
    source = {"path": str(path), "sha256": digest, "shape": shape or [sum(v[0] for v in shapes.values()),
                                                                      shapes["train"][1]], "splits": shapes, **recorded}
    name = str(path)
    return Dataset(name, *(as_tensor(rows[s]) for s in SPLITS), binary=binary,
                   image_shape=image_shape if image_shape and len(image_shape) == 2 else None,
                   labels={s: _long(v) for s, v in label_splits.items()}, levels=levels,
                   covariates=tuple(covariate_names), covariate_dim=covariate_dim, source=source)


def split_rows(n: int, split: Optional[Sequence[float]], seed: int, path) -> Tuple[np.ndarray, ...]:
    """(train, valid, test) row numbers of ``n`` rows, in the ``split`` fractions (valid, test), by ``seed``."""
    fv, ft = tuple(split) if split is not None else DEFAULT_SPLIT
    n_valid, n_test = int(round(n * fv)), int(round(n * ft))
    if n == 0:
        raise ZooError(f"{path} holds no data; give it rows")
    for what, count, fraction in (("valid", n_valid, fv), ("test", n_test, ft), ("train", n - n_valid - n_test, None)):
        if count <= 0:
            at = f" at --split fraction {fraction:g}" if fraction is not None else ""
            raise ZooError(f"{path}: {n} rows leave the {what} split empty{at}; add rows or change --split")
    return split_indices(n, n_valid, n_test, seed)


def _long(a: np.ndarray):
    import torch
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))


def _flatten(a: np.ndarray, path: Path, what: str) -> np.ndarray:
    """``[n]`` -> ``[n, 1]``; ``[n, ...]`` -> ``[n, prod(...)]``; a dtype that is not a number refused."""
    if a.dtype.kind not in "biuf":
        raise ZooError(f"{path}: {what} has dtype {a.dtype}, not a number type; save numbers")
    if a.ndim == 0:
        raise ZooError(f"{path}: {what} is a single number; give one row per datum")
    return a.reshape(a.shape[0], -1) if a.ndim != 2 else a


#: The largest magnitude the zoo's float32 tensors hold; a finite value beyond it would become inf.
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _refuse_nonfinite(a: np.ndarray, path: Path, what: str) -> None:
    """Refuse NaN and inf, and finite values beyond float32's range (1e300 in a float64 file), which the zoo's
    float32 tensors would hold as inf: each named by its row and column, as the file holds it."""
    if a.dtype.kind not in "biuf" or not a.size:
        return
    if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
        row, col = np.argwhere(~np.isfinite(a))[0]
        raise ZooError(f"{path}: {what} holds {a[row, col]} at row {row}, column {col}; clean the file "
                       f"(drop or fill the value)")
    if np.abs(a).max() > FLOAT32_MAX:
        row, col = np.argwhere(np.abs(a) > FLOAT32_MAX)[0]
        raise ZooError(f"{path}: {what} holds {a[row, col]:g} at row {row}, column {col}, beyond float32's range "
                       f"(±{FLOAT32_MAX:.3g}), in which the zoo computes; rescale the data (e.g. its logarithm) "
                       f"or drop the value")


def _check_levels(flat: Dict[str, np.ndarray], levels: int, path: Path) -> None:
    for s in SPLITS:
        a = flat[s]
        bad = (a < 0) | (a > levels - 1) | (a != np.round(a))
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise ZooError(f"{path}: the {s} split holds {a[row, col]:g} at row {row}, column {col}, which is not "
                           f"one of {levels} levels 0..{levels - 1}; give the right --levels or rescale the data")


# -- .npz ----------------------------------------------------------------------------------------
def _read_npz(path: Path, raw: bytes, covariates: Tuple[str, ...]):
    """(data arrays, covariate arrays) of an ``.npz`` (see the module docstring for the two layouts)."""
    arrays = read_npz_arrays(io.BytesIO(raw), path)
    if not arrays:
        raise ZooError(f"{path} holds no arrays; save them with numpy.savez")
    names = sorted(arrays)
    if set(SPLITS) <= set(arrays):
        covs = {}
        for c in covariates:
            missing = [f"{c}_{s}" for s in SPLITS if f"{c}_{s}" not in arrays]
            if missing:
                raise ZooError(f"{path} has no arrays {', '.join(missing)} for covariate {c!r}; beside train/valid/test "
                               f"a covariate NAME is NAME_train, NAME_valid and NAME_test (it holds: {', '.join(names)})")
            covs[c] = {s: arrays[f"{c}_{s}"] for s in SPLITS}
        return {s: arrays[s] for s in SPLITS}, covs
    present = [s for s in SPLITS if s in arrays]
    if present:
        raise ZooError(f"{path} has the arrays {', '.join(present)} but not all of train, valid and test; give all "
                       f"three, or one data array to be split")
    missing = [c for c in covariates if c not in arrays]
    if missing:
        raise ZooError(f"{path} has no array {missing[0]!r} for --covariates; it holds: {', '.join(names)}")
    rest = [n for n in names if n not in covariates]
    if len(rest) != 1:
        raise ZooError(f"{path} holds the arrays {', '.join(rest) or 'none'} besides covariates; give one data array "
                       f"(name the others with --covariates), or arrays train, valid and test")
    data = arrays[rest[0]]
    for c in covariates:
        if arrays[c].ndim == 0 or arrays[c].shape[0] != data.shape[0]:
            raise ZooError(f"{path}: covariate {c!r} has shape {arrays[c].shape}, the data {data.shape}; give one "
                           f"value (or row) per datum")
    return {"all": data}, {c: {"all": arrays[c]} for c in covariates}


# -- .csv / .tsv ----------------------------------------------------------------------------------
def _read_table(path: Path, raw: bytes, delimiter: str, covariates: Tuple[str, ...]):
    """(data, covariates) of a numeric CSV/TSV with an optional header line."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ZooError(f"{path} is not UTF-8 text; save it as a plain CSV") from None
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    try:
        lines = [(reader.line_num, row) for row in reader if any(field.strip() for field in row)]
    except csv.Error as e:          # a field over csv.field_size_limit() (131,072 characters), a NUL byte
        raise ZooError(f"{path}: line {reader.line_num} cannot be read as a table ({e}); the zoo reads numeric "
                       f"tables, one number per field") from None
    if not lines:
        raise ZooError(f"{path} holds no rows")
    header: Optional[List[str]] = None
    if not all(_is_number(f) for f in lines[0][1]):
        header = [f.strip() for f in lines[0][1]]
        lines = lines[1:]
        if not lines:
            raise ZooError(f"{path} has a header and no data rows")
    width = len(header) if header is not None else len(lines[0][1])
    for n, row in lines:
        if len(row) != width:
            raise ZooError(f"{path}: line {n} has {len(row)} fields, the {'header' if header else 'first line'} "
                           f"{width}; every row needs one value per column (a ragged or truncated file)")
    try:
        table = np.array([row for _, row in lines], dtype=np.float64)
    except ValueError:
        for n, row in lines:
            for j, value in enumerate(row):
                if not _is_number(value):
                    column = repr(header[j]) if header else str(j)
                    raise ZooError(f"{path}: line {n}, column {column} holds {value.strip()[:40]!r}, not a number; "
                                   f"the zoo reads numeric tables") from None
        raise
    covs = {}
    if covariates:
        if header is None:
            raise ZooError(f"{path} has no header line, so --covariates cannot name its columns; add a header")
        missing = [c for c in covariates if c not in header]
        if missing:
            raise ZooError(f"{path} has no column {missing[0]!r} for --covariates; its columns are: "
                           f"{', '.join(header)}")
        covs = {c: {"all": table[:, [header.index(c)]]} for c in covariates}
    keep = [j for j in range(width) if header is None or header[j] not in covariates]
    if not keep:
        raise ZooError(f"{path}: every column is a covariate; leave at least one column of data")
    return {"all": table[:, keep]}, covs


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False

