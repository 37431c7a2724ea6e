"""MNIST, FashionMNIST and CIFAR-10 at their real levels, from the files torchvision stores.

The zoo never downloads these at run time: point ``--data-dir`` (or ``PYRO_ZOO_DATA``) at the
folder a ``torchvision.datasets.MNIST(root, download=True)`` (``FashionMNIST``, ``CIFAR10``)
filled, or at the files' own folder:

- ``mnist256``: ``ROOT/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (or ``.gz``);
- ``fashion_mnist256``: the same under ``ROOT/FashionMNIST/raw/``;
- ``cifar10``: ``ROOT/cifar-10-batches-py/{data_batch_1..5,test_batch}``.

Each datum is the image's 8-bit pixels, 0..255 (256 levels; CIFAR-10 row by row, channels last,
3072 values), not scaled and not binarized: the data a k-level likelihood (a Categorical over 256
levels, a discretized logistic) models, in bits per dimension. The last 10 000 training images
of MNIST and FashionMNIST (5 000 of CIFAR-10) are the validation split; the test files are the
test split. The class labels come along for the latent scatter plot.

**Reading them safely.** An idx file (LeCun's MNIST format: a magic number giving the element
type and the number of dimensions, then the dimensions as big-endian 32-bit integers) is checked
against the bytes it holds before they are allocated, gzip'd or not, so a truncated file or a
header declaring terabytes is one line. CIFAR-10's "python version" batches are pickles, and a
pickle can run any code: they are read by :class:`ArrayUnpickler`, which builds nothing but
dicts, lists, strings, numbers and NumPy arrays of plain numbers and refuses any other global in
one line; then each batch must hold ``data`` (uint8 ``[n, 3072]``) and ``labels`` (n integers).
"""
from __future__ import annotations

import gzip
import hashlib
import io
import math
import pickle
import struct
import zlib
from pathlib import Path
from typing import BinaryIO, Dict, Optional, Tuple

import numpy as np
import torch

from zoo.core.errors import ZooError
from zoo.data.dataset import Dataset, as_tensor

__all__ = ["read_idx", "read_cifar_batch", "ArrayUnpickler", "load_mnist256", "load_fashion_mnist256",
           "load_cifar10", "MNIST_FILES", "CIFAR_FILES"]

#: idx element type codes (the third byte of the magic number) -> dtype, big-endian as the format stores them.
IDX_TYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
             0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
#: split -> (images, labels) file names, as torchvision stores them under ROOT/{MNIST,FashionMNIST}/raw.
MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
#: The largest CIFAR batch file read (the real ones are 31 MB).
CIFAR_MAX_BYTES = 256 << 20


# -- idx --------------------------------------------------------------------------------------------
def read_idx(path: Path) -> np.ndarray:
    """The array of an idx file (MNIST's ``*-ubyte``, or ``*-ubyte.gz``), its header checked before its data."""
    from zoo.core.memory import human_bytes, memory_bytes
    try:
        opened = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
        with opened as f:
            magic = _exactly(f, 4, path, "its magic number")
            if magic[:2] != b"\0\0" or magic[2] not in IDX_TYPES or magic[3] == 0:
                raise ZooError(f"{path} is not an idx file (magic {magic.hex()}); give torchvision's MNIST files")
            dtype, ndim = IDX_TYPES[magic[2]], magic[3]
            shape = struct.unpack(f">{ndim}I", _exactly(f, 4 * ndim, path, "its dimensions"))
            nbytes = math.prod(shape) * dtype.itemsize
            if nbytes > memory_bytes():
                raise ZooError(f"{path} declares shape {shape} ({human_bytes(nbytes)}), more than this machine's "
                               f"{human_bytes(memory_bytes())} of memory; the file is corrupt")
            data = f.read(nbytes + 1)
    except ZooError:
        raise
    except (OSError, EOFError, zlib.error) as e:
        raise ZooError(f"{path} is corrupt or truncated ({type(e).__name__}); replace it with a good copy") from None
    if len(data) != nbytes:
        raise ZooError(f"{path} declares shape {shape} ({nbytes} bytes of data) but holds "
                       f"{'more' if len(data) > nbytes else len(data)}; the file is corrupt or truncated: replace it")
    return np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _exactly(f: BinaryIO, n: int, path: Path, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise ZooError(f"{path} ends before {what}; the file is truncated: replace it")
    return data


def _idx_file(folder: Path, name: str) -> Path:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise ZooError(f"{folder} has no {name} (or {name}.gz)")


def _mnist_folder(root: Path, folder: str) -> Path:
    """The folder holding the idx files: ``ROOT/FOLDER/raw``, ``ROOT/raw`` or ``ROOT`` itself."""
    for candidate in (root / folder / "raw", root / "raw", root):
        if (candidate / MNIST_FILES["train"][0]).is_file() or (candidate / f"{MNIST_FILES['train'][0]}.gz").is_file():
            return candidate
    raise ZooError(f"{folder} is not in {root}: put torchvision's files in {root / folder / 'raw'} "
                   f"(torchvision.datasets.{folder}(root, download=True) on a machine with a network), or pass "
                   f"--data-dir or PYRO_ZOO_DATA; the zoo does not download it")


def _load_idx_images(data_dir: Optional[str], folder: str, name: str, valid: int) -> Dataset:
    from zoo.data import default_data_dir
    root = _mnist_folder(Path(data_dir) if data_dir else default_data_dir(), folder)
    digest = hashlib.sha256()
    arrays: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
    for split, (images_name, labels_name) in MNIST_FILES.items():
        images_path, labels_path = _idx_file(root, images_name), _idx_file(root, labels_name)
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.ndim != 3 or images.dtype != np.uint8 or labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise ZooError(f"{images_path} and {labels_path} are not an image file [n, H, W] of bytes and its n labels "
                           f"(shapes {images.shape} and {labels.shape}); give torchvision's {folder} files")
        for a in (images, labels):
            digest.update(np.ascontiguousarray(a).tobytes())
        arrays[split] = images, labels
    (train_x, train_y), (test_x, test_y) = arrays["train"], arrays["test"]
    if train_x.shape[0] <= valid:
        raise ZooError(f"{root}: the training file holds {train_x.shape[0]} images, leaving no training split "
                       f"after the last {valid} for validation")
    return _images_dataset(name, (train_x[:-valid], train_x[-valid:], test_x), (train_y[:-valid], train_y[-valid:],
                           test_y), str(root), digest.hexdigest(), image_shape=tuple(train_x.shape[1:]))


def load_mnist256(data_dir: Optional[str] = None, valid: int = 10000, **_) -> Dataset:
    """MNIST at its 256 levels from torchvision's files (50 000 / 10 000 / 10 000: the last ``valid`` training
    images validate)."""
    return _load_idx_images(data_dir, "MNIST", "mnist256", valid)


def load_fashion_mnist256(data_dir: Optional[str] = None, valid: int = 10000, **_) -> Dataset:
    """FashionMNIST at its 256 levels from torchvision's files (50 000 / 10 000 / 10 000)."""
    return _load_idx_images(data_dir, "FashionMNIST", "fashion_mnist256", valid)


def _images_dataset(name: str, xs, ys, where: str, digest: str, image_shape) -> Dataset:
    splits = [as_tensor(x.reshape(x.shape[0], -1)) for x in xs]
    labels = {s: torch.from_numpy(np.asarray(y, dtype=np.int64)) for s, y in zip(("train", "valid", "test"), ys)}
    shapes = {s: list(t.shape) for s, t in zip(("train", "valid", "test"), splits)}
    return Dataset(name, *splits, binary=False, image_shape=image_shape if len(image_shape) == 2 else None,
                   labels=labels, levels=256,
                   source={"path": where, "sha256": digest, "shape": [sum(v[0] for v in shapes.values()),
                                                                      shapes["train"][1]], "splits": shapes})


# -- CIFAR-10 ------------------------------------------------------------------------------------------
class Refused(pickle.UnpicklingError):
    """A global or codec a CIFAR-10 batch never names: the file is refused, not read."""


def _latin1(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as a protocol-2 pickle of Python 3 bytes calls it (``latin1``); any other codec, which
    could decompress or transform data, is refused."""
    if encoding != "latin1" or not isinstance(text, str):
        raise Refused(f"it encodes with {encoding!r}, which a CIFAR-10 batch does not")
    return text.encode("latin1")


class ArrayUnpickler(pickle.Unpickler):
    """An unpickler that builds plain containers and NumPy arrays of numbers, and nothing else.

    A pickle names the callables that rebuild its objects (``find_class``); CIFAR-10's batches name
    only NumPy's array reconstructor, ``ndarray`` and ``dtype`` (and, re-pickled by Python 3 at
    protocol 2, ``_codecs.encode`` for bytes, allowed for ``latin1`` only). Any other name (``os.system``, a
    class of some module) is refused before it is looked up, so no code the file names runs.
    """

    #: (module, name) -> the object; NumPy's reconstructors are taken from an array's own reduction, so
    #: both the names old pickles use (numpy.core) and NumPy 2's (numpy._core) map to them without an import
    ALLOWED = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
               **{(m, "_reconstruct"): np.zeros(0).__reduce__()[0]
                  for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
               **{(m, "_frombuffer"): np.zeros(0).__reduce_ex__(5)[0]
                  for m in ("numpy.core.numeric", "numpy._core.numeric")},
               ("_codecs", "encode"): _latin1}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise Refused(f"it names {module}.{name}, which a CIFAR-10 batch does not")
        return self.ALLOWED[module, name]

    def persistent_load(self, pid):
        raise Refused("it holds a persistent reference, which a CIFAR-10 batch does not")


def read_cifar_batch(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    """``(images uint8 [n, 3072], labels [n])`` of one CIFAR-10 python batch, read by :class:`ArrayUnpickler`."""
    from zoo.data.files import read_file_bytes
    if path.is_file() and path.stat().st_size > CIFAR_MAX_BYTES:
        raise ZooError(f"{path} is larger than a CIFAR-10 batch ({path.stat().st_size} bytes); it is not one")
    raw = read_file_bytes(path, "CIFAR-10 batch")
    try:
        batch = ArrayUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except Refused as e:
        raise ZooError(f"{path} is refused: {e}; the zoo never runs code from a data file. Replace it with "
                       f"torchvision's cifar-10-batches-py") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError, MemoryError, struct.error) as e:
        raise ZooError(f"{path} is corrupt or truncated ({type(e).__name__}); replace it with a good copy") from None
    if not isinstance(batch, dict):
        raise ZooError(f"{path} holds a {type(batch).__name__}, not a CIFAR-10 batch (a dict); replace it")
    data, labels = batch.get("data"), batch.get("labels")
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072):
        raise ZooError(f"{path}: its 'data' is not a uint8 [n, 3072] array; it is not a CIFAR-10 batch")
    if not (isinstance(labels, list) and len(labels) == data.shape[0] and
            all(isinstance(y, int) and 0 <= y < 10 for y in labels)):
        raise ZooError(f"{path}: its 'labels' are not {data.shape[0]} classes 0..9; it is not a CIFAR-10 batch")
    # stored channel by channel (3 x 32 x 32); a datum is its pixels row by row, channels last
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).reshape(-1, 3072)
    return np.ascontiguousarray(images), np.asarray(labels, dtype=np.int64)


def load_cifar10(data_dir: Optional[str] = None, valid: int = 5000, **_) -> Dataset:
    """CIFAR-10 at its 256 levels from torchvision's python batches (45 000 / 5 000 / 10 000)."""
    from zoo.data import default_data_dir
    root = Path(data_dir) if data_dir else default_data_dir()
    folder = root if root.name == CIFAR_FOLDER else root / CIFAR_FOLDER
    missing = [f for files in CIFAR_FILES.values() for f in files if not (folder / f).is_file()]
    if missing:
        raise ZooError(f"CIFAR-10 is not in {folder} (missing {', '.join(missing)}): put torchvision's "
                       f"{CIFAR_FOLDER} there (torchvision.datasets.CIFAR10(root, download=True) on a machine with "
                       f"a network), or pass --data-dir or PYRO_ZOO_DATA; the zoo does not download it")
    digest = hashlib.sha256()
    read = {}
    for split, files in CIFAR_FILES.items():
        batches = [read_cifar_batch(folder / f) for f in files]
        read[split] = np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])
        for a in read[split]:
            digest.update(a.tobytes())
    (train_x, train_y), (test_x, test_y) = read["train"], read["test"]
    if train_x.shape[0] <= valid:
        raise ZooError(f"{folder}: the training batches hold {train_x.shape[0]} images, leaving no training split "
                       f"after the last {valid} for validation")
    return _images_dataset("cifar10", (train_x[:-valid], train_x[-valid:], test_x),
                           (train_y[:-valid], train_y[-valid:], test_y), str(folder), digest.hexdigest(),
                           image_shape=(32, 32, 3))
