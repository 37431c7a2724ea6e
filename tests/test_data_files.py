"""A user's own data (``--dataset PATH``): every loader on small files the tests write, every bad file refused
in one line, the kind of the data checked against the likelihood, covariates passed to a model file, and the
file's SHA-256 pinned by the run."""
import gzip
import hashlib
import io
import pickle
import struct
import zipfile

import numpy as np
import pytest
import torch

from zoo.core.errors import ZooError
from zoo.data import load_dataset, load_digits
from zoo.data.files import load_data_file
from zoo.data.torchvision_files import load_cifar10, load_mnist256
from zoo.rules import DataFacts


def one_line(error: ZooError) -> str:
    text = str(error)
    assert "\n" not in text, text
    return text


def write_csv(path, rows, header=None, sep=","):
    lines = ([sep.join(header)] if header else []) + [sep.join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


# -- loaders ------------------------------------------------------------------------------------------
def test_a_csv_with_a_header_is_split_by_its_seed_and_recorded_by_its_bytes(tmp_path):
    rows = [[i % 4, (3 * i) % 7] for i in range(50)]
    path = write_csv(tmp_path / "counts.csv", rows, header=["a", "b"])
    data = load_data_file(str(path))
    assert (data.train.shape, data.valid.shape, data.test.shape) == ((40, 2), (5, 2), (5, 2))
    every = torch.cat([data.train, data.valid, data.test])
    assert sorted(map(tuple, every.tolist())) == sorted(tuple(map(float, r)) for r in rows)
    assert data.source["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() and data.source["shape"] == [50, 2]
    again, other = load_data_file(str(path)), load_data_file(str(path), split_seed=1)
    assert torch.equal(again.test, data.test) and not torch.equal(other.test, data.test)
    wide = load_data_file(str(path), split=(0.2, 0.3))
    assert (wide.valid.shape[0], wide.test.shape[0]) == (10, 15)


def test_a_csv_without_a_header_and_a_tsv(tmp_path):
    rows = [[i, 0.5 * i, -i] for i in range(20)]
    plain = load_data_file(str(write_csv(tmp_path / "x.csv", rows)))
    tabbed = load_data_file(str(write_csv(tmp_path / "x.tsv", rows, header=["p", "q", "r"], sep="\t")))
    assert plain.x_dim == tabbed.x_dim == 3 and plain.train.shape[0] == 16
    assert torch.equal(plain.test, tabbed.test)


def test_an_npz_with_its_own_splits_keeps_them_in_order(tmp_path):
    arrays = {s: np.arange(n * 3, dtype=np.float32).reshape(n, 3) for s, n in (("train", 6), ("valid", 2),
                                                                                 ("test", 3))}
    np.savez(tmp_path / "d.npz", **arrays)
    data = load_data_file(str(tmp_path / "d.npz"))
    for s in ("train", "valid", "test"):
        assert torch.equal(data.split(s), torch.from_numpy(arrays[s]))


def test_uint8_images_in_an_npy_are_256_levels(tmp_path):
    images = np.random.RandomState(0).randint(0, 256, size=(30, 4, 5)).astype(np.uint8)
    np.save(tmp_path / "im.npy", images)
    data = load_data_file(str(tmp_path / "im.npy"))
    facts = DataFacts.of(data)
    assert data.x_dim == 20 and data.image_shape == (4, 5) and (facts.kind, facts.levels) == ("levels", 256)


def test_an_image_folder_in_the_imagefolder_layout(tmp_path):
    from PIL import Image
    rng = np.random.RandomState(0)
    pixels = {}
    for label in ("cat", "dog"):
        (tmp_path / "img" / label).mkdir(parents=True)
        for i in range(10):
            a = rng.randint(0, 256, size=(3, 4)).astype(np.uint8)
            Image.fromarray(a, mode="L").save(tmp_path / "img" / label / f"{i}.png")
            pixels[a.tobytes()] = label
    (tmp_path / "img" / "cat" / "notes.txt").write_text("not an image")
    data = load_dataset(str(tmp_path / "img"))
    assert data.x_dim == 12 and data.levels == 256 and data.image_shape == (3, 4)
    for s in ("train", "valid", "test"):
        for row, label in zip(data.split(s), data.labels[s]):
            assert pixels[row.numpy().astype(np.uint8).tobytes()] == ("cat", "dog")[int(label)]


def test_digits17_holds_the_digits_seventeen_levels_and_binarizes_to_digits():
    d17, d2 = load_dataset("digits17"), load_digits()
    facts = DataFacts.of(d17)
    assert (facts.kind, facts.levels, d17.train.max().item()) == ("levels", 17, 16.0)
    assert torch.equal(d17.train == d17.train.round(), torch.ones_like(d17.train, dtype=torch.bool))
    assert torch.equal((d17.test >= 8).float(), d2.test)
    assert (DataFacts.of(d2).kind, DataFacts.of(d2).levels) == ("binary", 2)
    assert DataFacts.of(load_dataset("digits-gray")).kind == "reals"


def write_idx(path, array, compress=False):
    codes = {np.dtype("u1"): 0x08}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.tobytes()
    (gzip.open if compress else open)(path, "wb").write(data)


def mnist_folder(root, folder="MNIST", compress=False, n_train=12, n_test=4):
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.RandomState(1)
    made = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.randint(0, 256, size=(n, 5, 5)).astype(np.uint8)
        labels = rng.randint(0, 10, size=n).astype(np.uint8)
        suffix = ".gz" if compress else ""
        write_idx(raw / f"{split}-images-idx3-ubyte{suffix}", images, compress)
        write_idx(raw / f"{split}-labels-idx1-ubyte{suffix}", labels, compress)
        made[split] = images, labels
    return raw, made


@pytest.mark.parametrize("compress", [False, True])
def test_mnist256_reads_torchvisions_idx_files_gzipped_or_not(tmp_path, compress):
    _, made = mnist_folder(tmp_path, compress=compress)
    data = load_mnist256(str(tmp_path), valid=4)
    train, labels = made["train"]
    assert torch.equal(data.train, torch.from_numpy(train[:8].reshape(8, 25)).float())
    assert torch.equal(data.valid, torch.from_numpy(train[8:].reshape(4, 25)).float())
    assert torch.equal(data.test, torch.from_numpy(made["t10k"][0].reshape(4, 25)).float())
    assert torch.equal(data.labels["train"], torch.from_numpy(labels[:8]).long())
    assert data.levels == 256 and data.image_shape == (5, 5)


def cifar_folder(root, protocol=2, n=3):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.RandomState(2)
    made = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.randint(0, 256, size=(n, 3072)).astype(np.uint8)
        labels = [int(v) for v in rng.randint(0, 10, size=n)]
        batch = {"batch_label": "tiny", "labels": labels, "data": data, "filenames": [f"{i}.png" for i in range(n)]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
        made[name] = data, labels
    return folder, made


@pytest.mark.parametrize("protocol", [2, 4])
def test_cifar10_reads_the_python_batches_channels_last(tmp_path, protocol):
    _, made = cifar_folder(tmp_path, protocol)
    data = load_cifar10(str(tmp_path), valid=3)
    first, labels = made["data_batch_1"]
    assert data.train.shape == (12, 3072) and data.valid.shape == (3, 3072) and data.test.shape == (3, 3072)
    pixel = first[0].reshape(3, 32, 32)[:, 5, 7]                      # channel-major in the file
    assert data.train[0].reshape(32, 32, 3)[5, 7].tolist() == pixel.tolist()
    assert data.labels["train"][:3].tolist() == labels and data.levels == 256


# -- bad files: one line each ------------------------------------------------------------------------------
def npy_bytes(shape, dtype="<f8", body=b""):
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, header)
    return out.getvalue() + body


def bad_files(tmp_path):
    """name -> (a function writing the file and returning the path, a fragment of the expected error)."""
    def csv(text, name="bad.csv"):
        path = tmp_path / name
        path.write_text(text)
        return path

    def npy(array_or_bytes, name="bad.npy"):
        path = tmp_path / name
        if isinstance(array_or_bytes, bytes):
            path.write_bytes(array_or_bytes)
        else:
            np.save(path, array_or_bytes, allow_pickle=True)
        return path

    def truncated_npy():
        path = npy(np.zeros((20, 3)))
        path.write_bytes(path.read_bytes()[:-7])
        return path

    def npz_missing_test():
        np.savez(tmp_path / "bad.npz", train=np.zeros((4, 2)), valid=np.zeros((2, 2)))
        return tmp_path / "bad.npz"

    def npz_empty_valid():
        np.savez(tmp_path / "bad.npz", train=np.zeros((4, 2)), valid=np.zeros((0, 2)), test=np.zeros((2, 2)))
        return tmp_path / "bad.npz"

    def npz_not_a_zip():
        (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 this is not a zip")
        return tmp_path / "bad.npz"

    def npz_huge_member():
        body = npy_bytes((10 ** 13,))
        with zipfile.ZipFile(tmp_path / "bad.npz", "w") as z:
            z.writestr("train.npy", body)
        return tmp_path / "bad.npz"

    return {
        "truncated .npy": (truncated_npy, "corrupt or truncated"),
        "a 70 TiB header": (lambda: npy(npy_bytes((10 ** 13,), "<f8")), "more than this machine"),
        "a 70 TiB header in an npz": (npz_huge_member, "more than this machine"),
        "pickled objects": (lambda: npy(np.array([{"a": 1}, None], dtype=object)), "never unpickles"),
        "complex numbers": (lambda: npy(np.zeros((5, 2), dtype=np.complex64)), "not a plain number type"),
        "a string array": (lambda: npy(np.array([["a", "b"]] * 5)), "not a plain number type"),
        "NaN in a csv": (lambda: csv("a,b\n" + "1,2\n" * 5 + "3,nan\n" + "1,2\n" * 5), "holds nan at row 5, column 1"),
        "inf in an npy": (lambda: npy(np.array([[1.0, np.inf]] * 12)), "holds inf at row 0, column 1"),
        "a ragged csv": (lambda: csv("a,b,c\n1,2,3\n4,5\n"), "line 3 has 2 fields, the header 3"),
        "a truncated csv": (lambda: csv("1,2,3\n" * 10 + "1,"), "line 11 has 2 fields, the first line 3"),
        "text in a csv": (lambda: csv("a,b\n1,2\n3,x7\n"), "line 3, column 'b' holds 'x7', not a number"),
        "an empty csv": (lambda: csv("\n\n"), "holds no rows"),
        "a header only": (lambda: csv("a,b\n"), "no data rows"),
        "an empty split": (lambda: csv("1,2\n3,4\n5,6\n"), "the valid split empty"),
        "an npz without test": (npz_missing_test, "not all of train, valid and test"),
        "an npz with an empty split": (npz_empty_valid, "the valid split is empty"),
        "an npz that is no zip": (npz_not_a_zip, "corrupt or truncated"),
        "a wrong suffix": (lambda: csv("1,2\n", "data.json"), "a data file ends in"),
    }


@pytest.mark.parametrize("case", list(bad_files(__import__("pathlib").Path("/nonexistent"))))
def test_each_bad_file_is_one_line(tmp_path, case):
    write, expected = bad_files(tmp_path)[case]
    path = write()
    with pytest.raises(ZooError) as e:
        load_dataset(str(path))
    assert expected in one_line(e.value)


@pytest.mark.parametrize("damage,expected", [
    (lambda b: b[:-5], "corrupt or truncated"),
    (lambda b: b[:6], "truncated"),
    (lambda b: b"\x00\x00\x08\x03" + struct.pack(">3I", 10 ** 6, 10 ** 4, 10 ** 4) + b[16:], "more than this machine"),
    (lambda b: b"\x01\x02\x08\x03" + b[4:], "not an idx file"),
])
@pytest.mark.parametrize("compress", [False, True])
def test_bad_idx_files_are_one_line(tmp_path, damage, expected, compress):
    raw, _ = mnist_folder(tmp_path, compress=False)
    path = raw / "train-images-idx3-ubyte"
    damaged = damage(path.read_bytes())
    if compress:
        path.unlink()
        path = raw / "train-images-idx3-ubyte.gz"
        compressed = gzip.compress(damaged)
        path.write_bytes(compressed[:-3] if expected == "corrupt or truncated" else compressed)
    else:
        path.write_bytes(damaged)
    with pytest.raises(ZooError) as e:
        load_mnist256(str(tmp_path), valid=4)
    assert expected in one_line(e.value)


class Shell:
    """A pickle that would run a shell command when loaded."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return os.system, (f"touch {self.marker}",)


def test_a_cifar_batch_that_names_code_is_refused_and_nothing_runs(tmp_path):
    folder, _ = cifar_folder(tmp_path)
    marker = tmp_path / "ran"
    (folder / "data_batch_3").write_bytes(pickle.dumps({"data": Shell(marker)}))
    with pytest.raises(ZooError) as e:
        load_cifar10(str(tmp_path), valid=3)
    assert "data_batch_3 is refused: it names" in one_line(e.value) and "never runs code" in str(e.value)
    assert not marker.exists()


@pytest.mark.parametrize("damage,expected", [
    (lambda b: b[: len(b) // 2], "corrupt or truncated"),
    (lambda b: pickle.dumps({"data": np.zeros((3, 3072), dtype=np.float32), "labels": [0, 1, 2]}), "uint8 [n, 3072]"),
    (lambda b: pickle.dumps({"data": np.zeros((3, 3072), dtype=np.uint8), "labels": [0, 1, 12]}), "classes 0..9"),
    (lambda b: pickle.dumps([1, 2, 3]), "not a CIFAR-10 batch"),
])
def test_bad_cifar_batches_are_one_line(tmp_path, damage, expected):
    folder, _ = cifar_folder(tmp_path)
    path = folder / "test_batch"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ZooError) as e:
        load_cifar10(str(tmp_path), valid=3)
    assert expected in one_line(e.value)


def test_missing_torchvision_files_say_where_to_put_them(tmp_path):
    for load, what in ((load_mnist256, "MNIST is not in"), (load_cifar10, "CIFAR-10 is not in")):
        with pytest.raises(ZooError) as e:
            load(str(tmp_path))
        assert what in one_line(e.value) and "does not download" in str(e.value)


def test_bad_image_folders_are_one_line(tmp_path):
    from PIL import Image
    (tmp_path / "img" / "a").mkdir(parents=True)
    rng = np.random.RandomState(0)
    for i, size in enumerate(((40, 30), (40, 30), (41, 30))):
        Image.fromarray(rng.randint(0, 256, size=size[::-1]).astype(np.uint8)).save(tmp_path / "img" / "a" / f"{i}.png")
    with pytest.raises(ZooError) as e:
        load_dataset(str(tmp_path / "img"))
    assert "the same size" in one_line(e.value)
    (tmp_path / "img" / "a" / "2.png").unlink()
    png = (tmp_path / "img" / "a" / "1.png").read_bytes()
    (tmp_path / "img" / "a" / "1.png").write_bytes(png[: len(png) // 2])
    with pytest.raises(ZooError) as e:
        load_dataset(str(tmp_path / "img"))
    assert "corrupt or truncated image" in one_line(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ZooError, match="holds no images"):
        load_dataset(str(tmp_path / "empty"))


def test_levels_are_checked_when_declared(tmp_path):
    path = write_csv(tmp_path / "l.csv", [[i % 17, 16 - i % 17] for i in range(40)])
    assert load_data_file(str(path), levels=17).levels == 17
    with pytest.raises(ZooError) as e:
        load_data_file(str(path), levels=16)
    assert "not one of 16 levels 0..15" in one_line(e.value)


# -- covariates -------------------------------------------------------------------------------------------
def test_covariates_are_named_columns_of_a_csv_put_last(tmp_path):
    rows = [[i % 3, 0.1 * i, -i] for i in range(30)]
    path = write_csv(tmp_path / "r.csv", rows, header=["age", "y", "dose"])
    data = load_data_file(str(path), covariates=("dose", "age"))
    assert data.covariate_dim == 2 and data.covariates == ("dose", "age")
    every = torch.cat([data.train, data.valid, data.test])
    y, dose, age = every.T                                        # the data column first, then the covariates named
    assert torch.allclose(y, -0.1 * dose) and torch.equal(age, (-dose) % 3)
    with pytest.raises(ZooError) as e:
        load_data_file(str(path), covariates=("weight",))
    assert "has no column 'weight' for --covariates; its columns are: age, y, dose" in one_line(e.value)
    headless = write_csv(tmp_path / "h.csv", rows)
    with pytest.raises(ZooError, match="no header line"):
        load_data_file(str(headless), covariates=("age",))


def test_covariates_are_named_arrays_of_an_npz(tmp_path):
    x, age = np.arange(40.0).reshape(20, 2), np.arange(20.0) * 10
    np.savez(tmp_path / "one.npz", x=x, age=age)
    data = load_data_file(str(tmp_path / "one.npz"), covariates=("age",))
    every = torch.cat([data.train, data.valid, data.test])
    assert torch.equal(every[:, 2], every[:, 0] * 5)              # each row keeps its own covariate
    splits = {s: np.ones((n, 2)) * k for k, (s, n) in enumerate((("train", 6), ("valid", 2), ("test", 2)))}
    np.savez(tmp_path / "three.npz", **splits, **{f"age_{s}": np.full(len(a), 7.0 + k)
                                                   for k, (s, a) in enumerate(splits.items())})
    three = load_data_file(str(tmp_path / "three.npz"), covariates=("age",))
    assert three.valid[:, 2].tolist() == [8.0, 8.0] and three.x_dim == 3
    with pytest.raises(ZooError, match="no arrays dose_train"):
        load_data_file(str(tmp_path / "three.npz"), covariates=("dose",))
    with pytest.raises(ZooError, match="holds the arrays age, x besides covariates"):
        load_data_file(str(tmp_path / "one.npz"))


def test_the_kinds_of_the_splits_merged_are_those_of_their_rows_stacked():
    """Each column's narrowest kind (binary < counts < reals) and the first value that rules out the narrower one,
    read split by split (so a large data set is never copied whole), equal those of all rows at once."""
    from zoo.data.kinds import column_kinds, merge_kinds
    g = torch.Generator().manual_seed(0)
    parts = [torch.randint(0, 2, (5, 6), generator=g).float() for _ in range(3)]
    parts[1][2, 1], parts[2][0, 1], parts[2][4, 3], parts[0][1, 4], parts[2][0, 4] = 4, 2.5, 7, 3, -1
    merged, whole = merge_kinds([column_kinds(p) for p in parts]), column_kinds(torch.cat(parts))
    assert merged == whole
    assert whole.kinds[1:5] == ("reals", "binary", "counts", "reals") and whole.witnesses[1] == 2.5
    assert whole.witnesses[3:5] == (7.0, -1.0) and whole.maximum == 7.0
