"""Datasets: the embedded 8x8 digits, static binarized MNIST, synthetic pPCA data, MNIST,
FashionMNIST and CIFAR-10 at their 256 levels (:mod:`zoo.data.torchvision_files`), and a user's own
file or image folder (``--dataset PATH``, :mod:`zoo.data.files`).

Each loader returns a :class:`Dataset` of float32 tensors ``[N, D]`` split into
train/valid/test. Loaders validate what they read and raise
:class:`~zoo.core.errors.ZooError` with one line that says what to do. What kind of values a
dataset holds (binary, counts, k-level intensities, reals) is read off its tensors
(:mod:`zoo.data.kinds`) and checked against the model's likelihood by :mod:`zoo.rules`.

Binarized MNIST (Larochelle & Murray 2011, 50k/10k/10k) is read, in this order, from

1. ``--data-dir`` / ``data_dir=``, else the ``PYRO_ZOO_DATA`` environment variable,
   else ``~/.cache/pyro-zoo``: a ``binarized_mnist.npz`` (arrays ``train``, ``valid``,
   ``test``), the path of such a file itself, or the three canonical text files
   ``binarized_mnist_{train,valid,test}.amat``;
2. otherwise the canonical ``.amat`` files are downloaded into that folder (unless
   ``PYRO_ZOO_OFFLINE=1``, which makes a missing dataset an immediate error).

Either way the decoded arrays are checked against the SHA-256 of the canonical
data (:data:`BINARIZED_MNIST_SHA256`, computed over the uint8 array bytes, so the
check does not depend on the file's text formatting).
"""
from __future__ import annotations

import functools
import hashlib
import os
import urllib.request
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch

from zoo.core.errors import ZooError
from zoo.core.components import DATASETS, Component, NoOptions, OptionError
from zoo.core.views import ViewSite
from zoo.data.headers import read_npz_arrays
from zoo.data.dataset import SPLITS, Dataset, as_tensor, only_zeros_and_ones, split_indices
from zoo.data.files import load_data_file, looks_like_path
from zoo.data.torchvision_files import load_cifar10, load_fashion_mnist256, load_mnist256

__all__ = ["Dataset", "DATASETS", "load_dataset", "branching_diffusion", "load_digits", "load_digits17", "load_digits_labels",
           "load_mnist_halves", "load_binarized_mnist", "read_amat", "read_npz", "array_sha256", "synthetic_ppca",
           "data_path", "FILE_OPTIONS"]

MNIST_URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/binarized_mnist_{}.amat"
#: SHA-256 of each split as a C-ordered uint8 array of shape [n, 784].
BINARIZED_MNIST_SHA256 = {
    "train": "43490d4d6ac9002727af4426d8748609fdb7e4094fa65ad8d681ea60082a7a5a",
    "valid": "069b4f0beb389b776478c3e872b4df71c95ac4be64d7cbe6d32e24ebac8e6d5e",
    "test": "ca0294c3b8d984c7a1dc891015a8eea6f37bae59a34e35ea0fc8c47110a8dd86",
}


def array_sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a, dtype=np.uint8).tobytes()).hexdigest()


# -- digits (embedded, offline) ---------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _sklearn_digits():
    """(pixels ``[1797, 64]`` float64 0..16, labels ``[1797]`` int): scikit-learn's bundled digits, read from the
    file scikit-learn ships them in, ``sklearn/datasets/data/digits.csv.gz`` (65 comma-separated columns, the
    label last), as :func:`sklearn.datasets.load_digits` reads it, but without importing scikit-learn:
    ``sklearn.datasets`` imports SciPy and pandas, for a 1797 x 65 table. Where the
    file is not at that place (another scikit-learn layout), scikit-learn's own loader reads it. The arrays are
    read-only: the cache hands out the same ones to every caller."""
    import gzip
    import importlib.util
    spec = importlib.util.find_spec("sklearn")          # finds the package without running it
    path = (Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"
            if spec is not None and spec.submodule_search_locations else None)
    if path is not None and path.is_file():
        with gzip.open(path, "rt", encoding="utf-8") as f:
            table = np.loadtxt(f, delimiter=",")
        x, y = table[:, :-1], table[:, -1].astype(int)
    else:
        from sklearn.datasets import load_digits as sk_digits
        bunch = sk_digits()
        x, y = bunch.data, bunch.target
    if x.shape != (1797, 64) or y.shape != (1797,):
        raise ZooError(f"scikit-learn's digits file holds a table of shape {x.shape}, not 1797 x 64: "
                       f"reinstall scikit-learn ('pip install --force-reinstall scikit-learn')")
    x.flags.writeable = y.flags.writeable = False
    return x, y


def load_digits(binarize: bool = True, **_) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 images): 1257 train / 270 valid / 270 test.

    Pixels are 0..16; binarized at >= 8, or scaled to [0, 1] with ``binarize=False``.
    """
    pixels, y = _sklearn_digits()
    x = pixels.astype(np.float32)
    x = (x >= 8).astype(np.float32) if binarize else x / 16.0
    tr, va, te = split_indices(len(x), 270, 270)
    return Dataset("digits" if binarize else "digits-gray", as_tensor(x[tr]), as_tensor(x[va]),
                   as_tensor(x[te]), binary=binarize, image_shape=(8, 8),
                   labels={s: torch.from_numpy(y[i]) for s, i in zip(SPLITS, (tr, va, te))})


def load_digits17(**_) -> Dataset:
    """The 8x8 digits at their 17 levels: each pixel an integer 0..16, as scikit-learn ships them (the splits of
    :func:`load_digits`); the data a Categorical over 17 levels models (Tomczak's intro_dgm)."""
    pixels, y = _sklearn_digits()
    x = pixels.astype(np.float32)
    tr, va, te = split_indices(len(x), 270, 270)
    return Dataset("digits17", as_tensor(x[tr]), as_tensor(x[va]), as_tensor(x[te]), binary=False, image_shape=(8, 8),
                   labels={s: torch.from_numpy(y[i]) for s, i in zip(SPLITS, (tr, va, te))}, levels=17)


def load_digits_labels(**_) -> Dataset:
    """The binarized 8x8 digits with their labels: two views per row, 64 pixels and a one-hot label.

    Columns 0..63 are the image (Bernoulli), 64..73 the label (categorical, one-hot); the splits
    are those of :func:`load_digits`.
    """
    digits = load_digits(binarize=True)
    def with_label(split):
        return torch.cat([digits.split(split), torch.eye(10)[digits.labels[split].long()]], dim=1)
    return Dataset("digits_labels", *(with_label(s) for s in SPLITS), binary=True, labels=dict(digits.labels),
                   views=(ViewSite("image", 0, 64, "bernoulli"), ViewSite("label", 64, 74, "categorical")))


def load_mnist_halves(data_dir: Optional[str] = None, **kwargs) -> Dataset:
    """Static binarized MNIST as two views: the top 14 rows (392 pixels) and the bottom 14 rows."""
    mnist = load_binarized_mnist(data_dir, **kwargs)
    half = mnist.x_dim // 2
    mnist.name = "mnist_halves"
    mnist.views = (ViewSite("top", 0, half, "bernoulli"), ViewSite("bottom", half, mnist.x_dim, "bernoulli"))
    return mnist


# -- synthetic pPCA ---------------------------------------------------------------------------
def synthetic_ppca(x_dim: int = 10, latent_dim: int = 2, sigma: float = 0.5,
                   sizes=(2000, 500, 500), seed: int = 0, **_) -> Dataset:
    """Data drawn from a pPCA model with known W, mu, sigma (returned in ``truth``)."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(x_dim, latent_dim, generator=g)
    mu = torch.randn(x_dim, generator=g)
    n = sum(sizes)
    z = torch.randn(n, latent_dim, generator=g)
    x = z @ W.T + mu + sigma * torch.randn(n, x_dim, generator=g)
    a, b = sizes[0], sizes[0] + sizes[1]
    return Dataset("synthetic", x[:a], x[a:b], x[b:], binary=False,
                   truth={"W": W, "mu": mu, "sigma": torch.tensor(sigma)})


def branching_diffusion(depth: int = 6, x_dim: int = 50, per_node: int = 40, edge_scale: float = 1.0,
                        noise: float = 0.2, seed: int = 0, **_) -> Dataset:
    """Noisy observations of the nodes of a tree grown by a Gaussian branching diffusion, after Mathieu et al.
    (2019, "Continuous Hierarchical Representations with Poincare VAEs", their synthetic branching diffusion):
    the root y_0 = 0 in R^50; each node has two children, y_child ~ N(y_parent, edge_scale^2 I), down to
    ``depth`` levels below the root (127 nodes for depth 6); each node is observed ``per_node`` times,
    x ~ N(y_node, noise^2 I). The rows are shuffled (seed 0) and split 70/15/15; ``labels`` are the nodes'
    depths (0 at the root), ``truth["nodes"]`` the node positions and ``truth["parent"]`` each node's parent
    (-1 for the root). A hierarchy whose size doubles with depth: what hyperbolic latents are for."""
    g = torch.Generator().manual_seed(seed)
    nodes, parent, level = [torch.zeros(x_dim)], [-1], [0]
    frontier = [0]
    for d in range(1, depth + 1):
        grown = []
        for p in frontier:
            for _ in range(2):
                nodes.append(nodes[p] + edge_scale * torch.randn(x_dim, generator=g))
                parent.append(p)
                level.append(d)
                grown.append(len(nodes) - 1)
        frontier = grown
    y = torch.stack(nodes)
    which = torch.arange(len(nodes)).repeat_interleave(per_node)
    x = y[which] + noise * torch.randn(len(which), x_dim, generator=g)
    order = torch.randperm(len(which), generator=g)
    x, which = x[order], which[order]
    a, b = int(0.7 * len(x)), int(0.85 * len(x))
    depths = torch.tensor(level)[which]
    return Dataset("branching_diffusion", x[:a], x[a:b], x[b:], binary=False,
                   labels={"train": depths[:a], "valid": depths[a:b], "test": depths[b:]},
                   truth={"nodes": y, "parent": torch.tensor(parent), "node": which})


# -- binarized MNIST ----------------------------------------------------------------------------
def read_amat(path: Path, num_features: int = 784) -> np.ndarray:
    """Parse one ``.amat`` file: one datum per line, ``num_features`` space-separated 0/1 values."""
    rows = []
    try:
        with open(path, "r") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                values = line.split()
                if len(values) != num_features:
                    raise ZooError(f"{path} is corrupt: line {lineno} has {len(values)} values, expected "
                                   f"{num_features}; delete it and download it again")
                rows.append(values)
    except UnicodeDecodeError:
        raise ZooError(f"{path} is not a text .amat file; delete it and download it again") from None
    if not rows:
        raise ZooError(f"{path} is empty; delete it and download it again")
    try:
        a = np.asarray(rows, dtype=np.float64)
    except ValueError:
        raise ZooError(f"{path} is corrupt: it has non-numeric values; delete it and download it again") from None
    if not only_zeros_and_ones(a):
        raise ZooError(f"{path} is corrupt: values other than 0 and 1; delete it and download it again")
    return a.astype(np.uint8)


def read_npz(path: Path, num_features: Optional[int] = None) -> Dict[str, np.ndarray]:
    """Read ``train``/``valid``/``test`` arrays from an ``.npz`` and check they are 0/1 ``[n, D]``.

    The file is untrusted (a download, a file someone sent): every array's ``.npy`` header is read
    and checked (:func:`~zoo.data.headers.checked_npy_header`) before its data is, so a header that declares a 71 TiB
    array, Python objects (a pickle), or more bytes than the member holds is refused in one line,
    and nothing larger than the file's actual contents is ever allocated.
    """
    arrays = read_npz_arrays(path, path, keep=lambda name: name in SPLITS)
    missing = [s for s in SPLITS if s not in arrays]
    if missing:
        raise ZooError(f"{path} lacks the arrays {missing}; it must hold 'train', 'valid' and 'test'")
    dims = set()
    for s in SPLITS:
        a = arrays[s]
        if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0 or not np.issubdtype(a.dtype, np.number):
            raise ZooError(f"{path}: array {s!r} must be a non-empty numeric [n, D] array, got shape {a.shape} "
                           f"and dtype {a.dtype}")
        if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
            raise ZooError(f"{path}: array {s!r} contains NaN or infinite values; clean the file")
        if not only_zeros_and_ones(a):
            raise ZooError(f"{path}: array {s!r} has values other than 0 and 1; binarize it first")
        dims.add(a.shape[1])
    if len(dims) != 1:
        raise ZooError(f"{path}: the splits have different numbers of features {sorted(dims)}")
    if num_features is not None and dims != {num_features}:
        raise ZooError(f"{path}: rows have {dims.pop()} features, expected {num_features}")
    return {s: arrays[s].astype(np.uint8) for s in SPLITS}


def default_data_dir() -> Path:
    return Path(os.environ.get("PYRO_ZOO_DATA") or Path.home() / ".cache" / "pyro-zoo")


def _download_amat(folder: Path) -> None:
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        _fetch_each(folder)
    except OSError:
        if created and not any(folder.iterdir()):
            folder.rmdir()          # leave nothing behind when the download fails
        raise


def _fetch_each(folder: Path) -> None:
    for s in SPLITS:
        target = folder / f"binarized_mnist_{s}.amat"
        if target.exists():
            continue
        tmp = target.with_suffix(".amat.part")
        try:
            with urllib.request.urlopen(MNIST_URL.format(s), timeout=30) as r, open(tmp, "wb") as f:
                while chunk := r.read(1 << 20):
                    f.write(chunk)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, target)


def load_binarized_mnist(data_dir: Optional[str] = None, download: bool = True,
                         expected_sha256: Optional[Dict[str, str]] = BINARIZED_MNIST_SHA256,
                         num_features: int = 784, **_) -> Dataset:
    """Static binarized MNIST from a local ``.npz`` / ``.amat`` folder, downloading if absent."""
    root = Path(data_dir) if data_dir else default_data_dir()
    download = download and os.environ.get("PYRO_ZOO_OFFLINE", "") not in ("1", "true", "yes")
    where = "--data-dir or PYRO_ZOO_DATA"
    source = (f"it is the statically binarized MNIST of Larochelle & Murray (2011), published with the NADE paper "
              f"as {MNIST_URL.format('{train,valid,test}')}")
    if root.is_file():
        if root.suffix != ".npz":
            raise ZooError(f"{root} is not an .npz file; point {where} at binarized_mnist.npz or at a "
                           f"folder holding it or the three .amat files")
        arrays = read_npz(root, num_features)
    elif root.is_dir() and (root / "binarized_mnist.npz").is_file():
        arrays = read_npz(root / "binarized_mnist.npz", num_features)
    else:
        amat = [root / f"binarized_mnist_{s}.amat" for s in SPLITS]
        if not all(p.is_file() for p in amat):
            if root.exists() and not root.is_dir():
                raise ZooError(f"{root} is neither a folder nor an .npz file")
            if download:
                try:
                    _download_amat(root)
                except OSError as e:
                    raise ZooError(f"binarized MNIST is not in {root} and could not be downloaded "
                                   f"({type(e).__name__}); put binarized_mnist.npz or "
                                   f"binarized_mnist_{{train,valid,test}}.amat there, or pass {where}; {source}") from None
            else:
                raise ZooError(f"binarized MNIST is not in {root}; put binarized_mnist.npz or "
                               f"binarized_mnist_{{train,valid,test}}.amat there, or pass {where}; {source}")
        arrays = {s: read_amat(p, num_features) for s, p in zip(SPLITS, amat)}
    if expected_sha256:
        for s in SPLITS:
            if array_sha256(arrays[s]) != expected_sha256[s]:
                raise ZooError(f"binarized MNIST split {s!r} in {root} fails its checksum "
                               f"(shape {arrays[s].shape}); the file is corrupt or not the "
                               f"Larochelle & Murray split: replace it")
    side = int(round(np.sqrt(arrays["train"].shape[1])))
    image_shape = (side, side) if side * side == arrays["train"].shape[1] else None
    return Dataset("binarized_mnist", *(as_tensor(arrays[s]) for s in SPLITS), binary=True,
                   image_shape=image_shape)


DATASETS.register("digits", description="scikit-learn's bundled 8x8 digits, binarized at 8/16 (offline default)",
                  binary=True)(load_digits)
DATASETS.register("digits-gray", description="the same digits scaled to [0, 1], for Gaussian likelihoods",
                  binary=False)(lambda **kw: load_digits(binarize=False))
DATASETS.register("binarized_mnist", description="static binarized MNIST, Larochelle & Murray 50k/10k/10k "
                  "(data_dir or PYRO_ZOO_DATA)", binary=True, needs_data_dir=True)(load_binarized_mnist)
DATASETS.register("digits_labels", description="the binarized 8x8 digits with their labels: views image "
                  "(64 pixels, Bernoulli) and label (one-hot, categorical), for mvae", binary=True,
                  views=True)(load_digits_labels)
DATASETS.register("mnist_halves", description="static binarized MNIST as views top and bottom (14 rows of pixels "
                  "each), for mvae (data_dir or PYRO_ZOO_DATA)", binary=True, needs_data_dir=True,
                  views=True)(load_mnist_halves)
DATASETS.register("digits17", description="the 8x8 digits at their 17 levels, integers 0..16 (offline; for the k-level "
                  "likelihoods: categorical, dlogistic, dmol, dequant-*)", binary=False, levels=17)(load_digits17)
DATASETS.register("mnist256", description="MNIST at 256 levels from torchvision's idx files, 50k/10k/10k (data_dir or "
                  "PYRO_ZOO_DATA; never downloaded)", binary=False, levels=256, needs_data_dir=True)(load_mnist256)
DATASETS.register("fashion_mnist256", description="FashionMNIST at 256 levels from torchvision's idx files, "
                  "50k/10k/10k (data_dir or PYRO_ZOO_DATA; never downloaded)", binary=False, levels=256,
                  needs_data_dir=True)(load_fashion_mnist256)
DATASETS.register("cifar10", description="CIFAR-10 at 256 levels (3072 values, channels last) from torchvision's "
                  "python batches, 45k/5k/10k (data_dir or PYRO_ZOO_DATA; never downloaded)", binary=False,
                  levels=256, needs_data_dir=True)(load_cifar10)
DATASETS.register("synthetic", description="10-D data drawn from a 2-D pPCA with known parameters",
                  binary=False)(synthetic_ppca)
DATASETS.register("branching_diffusion", description="noisy observations (50-D) of the 127 nodes of a tree grown by "
                  "a Gaussian branching diffusion (Mathieu et al. 2019), for hyperbolic latents", binary=False)(
    branching_diffusion)


#: The options of a data file (``--dataset PATH``); a registered dataset takes none of them.
FILE_OPTIONS = ("covariates", "split", "split_seed", "levels")


def _resolve_data_file(name: str) -> Optional[Component]:
    """The registry entry of a data file or image folder (``--dataset PATH``); ``None`` for other names."""
    if not looks_like_path(name):
        return None
    return Component("dataset", name, functools.partial(load_data_file, name), NoOptions,
                     f"your data file {name}", {"file": True})


DATASETS.add_resolver(_resolve_data_file)


def data_path(name: str) -> str:
    """``name`` as a run records it: a registered name as it is, a data file's path made absolute (so a run
    never depends on the folder it was started from)."""
    if name in DATASETS or not looks_like_path(name):
        return name
    return str(Path(name).expanduser().absolute())


def load_dataset(name: str, data_dir: Optional[str] = None, **file_options) -> Dataset:
    """Load a dataset by name or path (``data_dir``: where files such as binarized MNIST live).

    ``file_options`` (:data:`FILE_OPTIONS`: ``covariates``, ``split``, ``split_seed``, ``levels``) apply to a data
    file (:func:`~zoo.data.files.load_data_file`); given for a registered dataset, they are an error."""
    component = DATASETS[name]
    given = {k: v for k, v in file_options.items() if v not in (None, ())}
    unknown = sorted(set(given) - set(FILE_OPTIONS))
    if unknown:
        raise TypeError(f"load_dataset got unknown options {unknown}")
    if component.capability("file"):
        return component.factory(data_dir=data_dir, **given)
    if given:
        option = next(iter(given))
        raise OptionError(option, f"applies to a data file (--dataset PATH), not the registered dataset {name!r}: "
                          f"drop it", kind="run")
    return component.factory(data_dir=data_dir)
