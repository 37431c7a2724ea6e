"""Data loaders: small .amat/.npz files written here are parsed; corrupt ones are refused clearly."""
import numpy as np
import pytest
import torch

from zoo.data import (BINARIZED_MNIST_SHA256, array_sha256, load_binarized_mnist, load_dataset, load_digits,
                      read_npz)
from zoo.core.errors import ZooError
from zoo.core.contract import check_data


def tiny_splits(d=4):
    rng = np.random.RandomState(0)
    return {s: (rng.rand(n, d) > 0.5).astype(np.uint8) for s, n in (("train", 6), ("valid", 3), ("test", 2))}


def hashes(arrays):
    return {s: array_sha256(a) for s, a in arrays.items()}


def write_amat(folder, arrays):
    for s, a in arrays.items():
        (folder / f"binarized_mnist_{s}.amat").write_text("\n".join(" ".join(str(v) for v in row) for row in a) + "\n")


def test_amat_folder_round_trip(tmp_path):
    arrays = tiny_splits()
    write_amat(tmp_path, arrays)
    data = load_binarized_mnist(tmp_path, download=False, expected_sha256=hashes(arrays), num_features=4)
    for s in ("train", "valid", "test"):
        assert torch.equal(data.split(s), torch.from_numpy(arrays[s]).float())
    assert data.binary and data.image_shape == (2, 2)


def test_npz_file_and_folder_round_trip(tmp_path):
    arrays = tiny_splits()
    np.savez(tmp_path / "binarized_mnist.npz", **arrays)
    for where in (tmp_path, tmp_path / "binarized_mnist.npz"):
        data = load_binarized_mnist(where, download=False, expected_sha256=hashes(arrays), num_features=4)
        assert torch.equal(data.test, torch.from_numpy(arrays["test"]).float())


def test_environment_variable_points_the_loader(tmp_path, monkeypatch):
    arrays = tiny_splits()
    np.savez(tmp_path / "binarized_mnist.npz", **arrays)
    monkeypatch.setenv("PYRO_ZOO_DATA", str(tmp_path))
    assert load_binarized_mnist(download=False, expected_sha256=hashes(arrays), num_features=4).train.shape == (6, 4)


@pytest.mark.parametrize("corruption,match", [
    (lambda p: p.write_text(p.read_text().splitlines()[0][:-2] + "\n"), "line 1 has 3 values"),
    (lambda p: p.write_text(p.read_text().replace("1", "2", 1)), "values other than 0 and 1"),
    (lambda p: p.write_text(p.read_text().replace("0", "x", 1)), "non-numeric"),
    (lambda p: p.write_bytes(b"\xff\xfe\x00garbage"), "not a text .amat|corrupt"),
    (lambda p: p.write_text(""), "empty"),
])
def test_corrupt_amat_is_refused(tmp_path, corruption, match):
    write_amat(tmp_path, tiny_splits())
    corruption(tmp_path / "binarized_mnist_valid.amat")
    with pytest.raises(ZooError, match=match):
        load_binarized_mnist(tmp_path, download=False, expected_sha256=None, num_features=4)


def test_truncated_npz_is_refused(tmp_path):
    np.savez(tmp_path / "binarized_mnist.npz", **tiny_splits())
    raw = (tmp_path / "binarized_mnist.npz").read_bytes()
    (tmp_path / "binarized_mnist.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ZooError, match="corrupt or truncated"):
        read_npz(tmp_path / "binarized_mnist.npz")


def test_npz_with_wrong_contents_is_refused(tmp_path):
    arrays = tiny_splits()
    np.savez(tmp_path / "a.npz", train=arrays["train"], valid=arrays["valid"])
    with pytest.raises(ZooError, match="lacks the arrays"):
        read_npz(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", **{**arrays, "test": arrays["test"] * 3})
    with pytest.raises(ZooError, match="other than 0 and 1"):
        read_npz(tmp_path / "b.npz")


def test_checksum_mismatch_is_refused(tmp_path):
    arrays = tiny_splits()
    write_amat(tmp_path, arrays)
    with pytest.raises(ZooError, match="fails its checksum"):
        load_binarized_mnist(tmp_path, download=False, num_features=4)   # the real MNIST hashes


def test_missing_dataset_says_where_to_put_it_and_where_it_comes_from(tmp_path, monkeypatch):
    monkeypatch.setenv("PYRO_ZOO_OFFLINE", "1")
    with pytest.raises(ZooError, match="put binarized_mnist.npz") as error:
        load_binarized_mnist(tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()
    assert "Larochelle & Murray" in str(error.value) and "larocheh/public/datasets/binarized_mnist/" in str(error.value)


def test_digits_is_binary_8x8_with_disjoint_splits(digits):
    assert digits.train.shape == (1257, 64) and digits.valid.shape == (270, 64) and digits.test.shape == (270, 64)
    assert set(digits.train.unique().tolist()) == {0.0, 1.0}
    rows = {tuple(r) for r in digits.test.tolist()}
    assert len(rows) > 200                       # real images, not a constant
    assert load_digits(binarize=False).train.max() <= 1.0


def test_digits_are_scikit_learns_own_read_without_importing_it():
    """The file is read as scikit-learn reads it (the same pixels and labels, in order), in a process that never
    imports scikit-learn; a layout without the file falls back to scikit-learn's loader."""
    import subprocess
    import sys
    from sklearn.datasets import load_digits as sk_digits
    import zoo.data as data
    bunch = sk_digits()
    pixels, labels = data._sklearn_digits()
    np.testing.assert_array_equal(pixels, bunch.data)
    np.testing.assert_array_equal(labels, bunch.target)
    d = load_digits()
    torch.testing.assert_close(torch.cat([d.train, d.valid, d.test]).sum(0),
                               torch.from_numpy((bunch.data >= 8).sum(0).astype(np.float32)))
    probe = ("import sys; from zoo.data import load_digits; d = load_digits(); "
             "print(d.train.shape[0], any(m == 'sklearn' or m.startswith('sklearn.') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["1257", "False"]


def test_digits_fall_back_to_scikit_learns_loader(monkeypatch):
    import importlib.util
    import sklearn.datasets
    import zoo.data as data
    expected = [a.copy() for a in data._sklearn_digits()]
    data._sklearn_digits.cache_clear()
    find_spec, loader, calls = importlib.util.find_spec, sklearn.datasets.load_digits, []
    monkeypatch.setattr(importlib.util, "find_spec",          # another layout: no package file to read
                        lambda name, *a, **k: None if name == "sklearn" else find_spec(name, *a, **k))
    monkeypatch.setattr(sklearn.datasets, "load_digits", lambda *a, **k: calls.append(1) or loader(*a, **k))
    try:
        pixels, labels = data._sklearn_digits()
        assert calls == [1]                                   # scikit-learn's own loader read them
        np.testing.assert_array_equal(pixels, expected[0])
        np.testing.assert_array_equal(labels, expected[1])
    finally:
        data._sklearn_digits.cache_clear()


def test_synthetic_carries_its_truth():
    d = load_dataset("synthetic")
    assert set(d.truth) == {"W", "mu", "sigma"} and d.train.shape == (2000, 10)


@pytest.mark.parametrize("x,match", [
    (torch.zeros(3, 4, 2), "2-D"),
    (torch.zeros(0, 4), "empty"),
    (torch.zeros(3, 5), "5 features"),
    (torch.zeros(3, 4, dtype=torch.int64), "dtype"),
    (torch.tensor([[0.0, float("nan"), 1.0, 0.0]]), "NaN"),
    (torch.full((2, 4), 0.5), "other than 0 and 1"),
])
def test_data_checks(x, match):
    with pytest.raises(ZooError, match=match):
        check_data(x, 4, binary=True)


@pytest.mark.skipif(not __import__("pathlib").Path(__file__).resolve().parents[2].joinpath(
    "shared/data/binarized_mnist.npz").exists(), reason="shared binarized MNIST not present")
def test_real_binarized_mnist_checksums():
    from pathlib import Path
    data = load_binarized_mnist(Path(__file__).resolve().parents[2] / "shared/data", download=False)
    assert data.train.shape == (50000, 784) and data.test.shape == (10000, 784)
    assert array_sha256(data.test.numpy().astype(np.uint8)) == BINARIZED_MNIST_SHA256["test"]


@pytest.mark.parametrize("values,binary", [([0, 1, 1, 0], True), ([0.0, 1.0], True), ([True, False], True),
                                           ([0, 2], False), ([0.0, float("nan")], False), ([0.5, 1.0], False),
                                           ([-1, 0], False), ([255, 0], False)])
def test_the_binary_check_accepts_exactly_zeros_and_ones(values, binary):
    from zoo.data.dataset import only_zeros_and_ones
    for dtype in ({np.uint8, np.float32, np.float64} if all(float(v) in (0.0, 1.0) for v in values) else {None}):
        assert only_zeros_and_ones(np.asarray(values, dtype=dtype)) is binary
