"""pyro-zoo compress: bits-back ANS round trips bit-exactly, and a damaged code file is refused in one line."""
import json
import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("constriction")

from zoo.cli import main  # noqa: E402


def train(tmp_path_factory, name, *args):
    out = tmp_path_factory.mktemp("runs") / name
    assert main(["train", "vae", "--epochs", "2", "--latent-dim", "3", "--hidden", "16", "--eval-samples", "2",
                 "--out", str(out), "--no-progress", *args]) == 0
    return out


@pytest.fixture(scope="module")
def binary_run(tmp_path_factory):
    return train(tmp_path_factory, "binary", "--dataset", "digits")


@pytest.fixture(scope="module")
def levels_run(tmp_path_factory):
    return train(tmp_path_factory, "levels", "--dataset", "digits17", "--likelihood", "categorical")


@pytest.mark.parametrize("which", ["binary_run", "levels_run"])
def test_round_trip_is_bit_exact(which, request, capsys):
    """compress codes 40 test images, decodes them from the file it wrote, and they equal the originals; the
    rate is near the -ELBO in bits/dim (a bound, up to the latent discretization and the first image's bits)."""
    from zoo.data import load_dataset
    from zoo.experiments.compress import compress_run
    from zoo.experiments.trained import fixed_subset
    run = request.getfixturevalue(which)
    result = compress_run(run, limit=40)
    assert result["bit_exact"] and result["num_data"] == 40
    assert abs(result["bits_per_dim"] - result["neg_elbo_bits_per_dim"]) < 0.15 * result["neg_elbo_bits_per_dim"]
    assert set(result["baselines_bits_per_dim"]) == {"gzip", "bz2", "lzma", "png"}
    out = run / "decoded.npy"
    assert main(["compress", str(run), "--decode", result["file"], "--out", str(out)]) == 0
    import numpy as np
    dataset = json.loads((run / "config.json").read_text())["dataset"]
    expected = fixed_subset(load_dataset(dataset).test, 40)
    assert torch.equal(torch.from_numpy(np.load(out).astype("float32")), expected)


def test_the_rate_of_the_whole_file_is_reported_beside_the_payloads(binary_run, tmp_path, capsys):
    """The rate left out the code file's own header (435 bytes, about 0.2 bits/dim on the 17-level digits' test
    split): the result gives the whole file's bits, its header's, and its bits/dim beside the payload's, and the
    command prints both rates and the file's true size (it printed the words' size as the file's)."""
    code = tmp_path / "code.pzbb"
    assert main(["compress", str(binary_run), "--limit", "10", "--out", str(code)]) == 0
    out = capsys.readouterr().out
    size = code.stat().st_size
    from zoo.experiments.compress import compress_run
    result = compress_run(binary_run, limit=10, out=code)
    assert result["file_bits"] == 8 * size and result["header_bits"] == 8 * size - result["bits"] > 8 * 300
    assert result["file_bits_per_dim"] == pytest.approx(8 * size / (10 * 64))
    assert result["file_bits_per_dim"] > result["bits_per_dim"]
    table = [line for line in out.splitlines() if line.startswith("|")]
    head = [c.strip() for c in table[0].split("|")]
    row = [c.strip() for c in table[2].split("|")]
    assert row[head.index("BB-ANS bits/dim")] == f"{result['bits_per_dim']:.4f}"
    assert row[head.index("file bits/dim")] == f"{result['file_bits_per_dim']:.4f}"
    assert f"({size} bytes: {size - result['bits'] // 8} of header, {result['bits'] // 8} of code)" in out


def test_discrete_latents_need_no_discretization():
    """sbn and categorical_vae code their binary and one-hot latents as they are; the round trip is exact."""
    import zoo
    from zoo.evaluation.bitsback import BitsBackCoder
    x = (zoo.load_dataset("digits").test[:10])
    torch.manual_seed(0)
    for name in ("sbn", "categorical_vae"):
        model = zoo.build_model(name, 64)
        coder = BitsBackCoder(model, zoo.build_guide("amortized", model))
        assert all(s.kind != "real" for s in coder.sites)
        words, _ = coder.encode(x)
        decoded, _ = coder.decode(words, 10)
        assert torch.equal(decoded, x)


def damaged(path, how):
    blob = bytearray(path.read_bytes())
    if how == "truncated":
        return bytes(blob[:-4])
    blob[-3] ^= 0x10                       # one flipped bit in the code words
    return bytes(blob)


def test_a_code_file_elsewhere_writes_nothing_into_the_run_folder(binary_run, tmp_path, capsys):
    """compress of a run folder the user may only read (a read-only mount, a folder sent to them) with --out
    elsewhere was refused: it took the run folder's writer lock, a file it wrote there. A code file elsewhere only
    reads the run, so nothing is written into the folder, its lock included."""
    run = tmp_path / "run"
    shutil.copytree(binary_run, run)
    (run / ".pyro-zoo.lock").unlink(missing_ok=True)
    before = sorted(p.name for p in run.iterdir())
    assert main(["compress", str(run), "--limit", "3", "--out", str(tmp_path / "c.pzbb")]) == 0, capsys.readouterr().err
    assert (tmp_path / "c.pzbb").is_file() and sorted(p.name for p in run.iterdir()) == before


def test_a_code_file_elsewhere_waits_for_no_writer_mid_change(binary_run, tmp_path, capsys):
    """Without the writer lock, compress --out elsewhere would code whatever checkpoint a resumed run had just
    written, its config and weights read at different moments (found by review). It takes a shared lock: while a
    writer holds the folder it is refused in one line, and once the writer is done it codes."""
    import fcntl
    import os
    run = tmp_path / "run"
    shutil.copytree(binary_run, run)
    fd = os.open(run / ".pyro-zoo.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)                      # a writer (train --resume) holds the folder
        assert main(["compress", str(run), "--limit", "3", "--out", str(tmp_path / "c.pzbb")]) == 2
        err = capsys.readouterr().err
        assert "another pyro-zoo process" in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "c.pzbb").exists()
    finally:
        os.close(fd)                                        # the writer is done
    assert main(["compress", str(run), "--limit", "3", "--out", str(tmp_path / "c.pzbb")]) == 0


@pytest.mark.parametrize("how", ["corrupt", "truncated"])
def test_damaged_code_file_is_one_line_never_an_image(binary_run, tmp_path, capsys, how):
    from zoo.experiments.compress import compress_run
    result = compress_run(binary_run, limit=10, out=tmp_path / "ok.pzbb")
    bad = tmp_path / "bad.pzbb"
    bad.write_bytes(damaged(tmp_path / "ok.pzbb", how))
    capsys.readouterr()
    assert main(["compress", str(binary_run), "--decode", str(bad), "--out", str(tmp_path / "x.npy")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pyro-zoo: error:") and err.count("\n") == 1 and how in err
    assert not (tmp_path / "x.npy").exists() and result["bit_exact"]


def test_a_header_that_lies_about_the_data_is_refused(binary_run, tmp_path, capsys):
    """A code file whose words are intact but whose header names other data decodes to rows that fail the data
    checksum: refused, not returned."""
    from zoo.experiments.compress import MAGIC, compress_run
    compress_run(binary_run, limit=10, out=tmp_path / "ok.pzbb")
    blob = (tmp_path / "ok.pzbb").read_bytes()
    start = len(MAGIC) + 5
    size = int.from_bytes(blob[len(MAGIC) + 1:start], "big")
    header = json.loads(blob[start:start + size])
    header["data_sha256"] = "0" * 64
    text = json.dumps(header).encode()
    (tmp_path / "lie.pzbb").write_bytes(blob[:len(MAGIC) + 1] + len(text).to_bytes(4, "big") + text
                                        + blob[start + size:])
    assert main(["compress", str(binary_run), "--decode", str(tmp_path / "lie.pzbb")]) == 2
    assert "fail the checksum" in capsys.readouterr().err


def test_a_density_is_refused(tmp_path_factory, capsys):
    run = train(tmp_path_factory, "gauss", "--dataset", "digits-gray", "--epochs", "1")
    capsys.readouterr()
    assert main(["compress", str(run), "--limit", "5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "density" in err


@pytest.mark.parametrize("model_name,options", [("vae", {"likelihood": "dlogistic", "levels": 17}),
                                                ("vae", {"likelihood": "dmol", "levels": 17, "mixtures": 2}),
                                                ("hvae", {"likelihood": "categorical", "levels": 17, "layers": (3, 2),
                                                          "hidden": (8,), "transition_hidden": (8,)})])
def test_every_pixel_likelihood_and_a_hierarchy_round_trip(model_name, options):
    """The coder reads each pixel's categorical off the decoder's log_prob over the levels, whatever the
    likelihood; an hvae's z1 is binned under p(z1 | z2) at z2's bin centre. Decoding gives the rows back."""
    import zoo
    from zoo.evaluation.bitsback import BitsBackCoder
    torch.manual_seed(0)
    x = zoo.load_dataset("digits17").test[:8]
    model = zoo.build_model(model_name, 64, **options)
    coder = BitsBackCoder(model, zoo.build_guide("amortized", model), latent_bits=8)
    words, _ = coder.encode(x)
    assert torch.equal(coder.decode(words, 8)[0], x)


# -- other people's hands: --out never replaces what compress did not write; a code file is data ------------------
def one_line_error(code, err):
    return code == 2 and err.startswith("pyro-zoo: error:") and err.count("\n") == 1


def test_out_never_replaces_a_file_compress_did_not_write(binary_run, tmp_path, capsys):
    """`compress RUN --out RUN/checkpoint.pt` replaced the trained checkpoint with the code, exit 0, and `--decode
    --out` another run's results.json with the decoded rows. --out is a new file, or one the same command wrote
    (a code file, known by its PZBB header; the .npy of the rows this code file decodes to); every other file,
    a run folder's own files and the file being decoded, is refused in one line and left as it was."""
    import shutil

    import numpy as np
    run, other = shutil.copytree(binary_run, tmp_path / "run"), shutil.copytree(binary_run, tmp_path / "other")
    mine, notes = tmp_path / "mine.npy", tmp_path / "notes.pzbb"
    np.save(mine, np.zeros((5, 64), np.uint8))
    notes.write_text("my notes, not a code file")
    kept = [run / "checkpoint.pt", run / "config.json", run / "results.json", other / "results.json",
            other / "per_datum.npz", mine, notes]
    before = {p: p.read_bytes() for p in kept}
    code, decoded = tmp_path / "code.pzbb", tmp_path / "decoded.npy"
    for target in (run / "checkpoint.pt", run / "results.json", run / "config.json", other / "per_datum.npz", notes,
                   other / "samples.png", tmp_path / "new-folder" / "checkpoint.pt"):
        capsys.readouterr()
        assert main(["compress", str(run), "--limit", "5", "--out", str(target)]) == 2, target
        err = capsys.readouterr().err
        assert one_line_error(2, err) and "name a new file" in err, err
    for _ in range(2):                                   # a new file, then the code file it wrote: replaced
        assert main(["compress", str(run), "--limit", "5", "--out", str(code)]) == 0
    for target in (other / "results.json", mine, code, run / "checkpoint.pt"):
        capsys.readouterr()
        assert main(["compress", str(run), "--decode", str(code), "--out", str(target)]) == 2, target
        err = capsys.readouterr().err
        assert one_line_error(2, err) and "name a new file" in err, err
    for _ in range(2):                                   # a new file, then the rows it holds: written again
        assert main(["compress", str(run), "--decode", str(code), "--out", str(decoded)]) == 0
    assert all(p.read_bytes() == before[p] for p in kept)
    assert not (tmp_path / "new-folder").exists() and not (other / "samples.png").read_bytes().startswith(b"PZBB")


def test_out_never_replaces_another_runs_code_file(binary_run, tmp_path, capsys):
    """A code file was known by its PZBB magic alone, so `compress A --out B/compressed-test.pzbb` replaced run B's
    code with A's. It is replaced only by the run it names (its header's checkpoint SHA-256)."""
    other = tmp_path / "other"
    assert main(["train", "vae", "--epochs", "1", "--latent-dim", "3", "--hidden", "16", "--eval-samples", "2",
                 "--dataset", "digits", "--seed", "1", "--out", str(other), "--no-progress"]) == 0
    theirs = tmp_path / "theirs.pzbb"
    assert main(["compress", str(other), "--limit", "5", "--out", str(theirs)]) == 0
    before = theirs.read_bytes()
    capsys.readouterr()
    assert main(["compress", str(binary_run), "--limit", "5", "--out", str(theirs)]) == 2
    err = capsys.readouterr().err
    assert one_line_error(2, err) and "another run" in err and "name a new file" in err, err
    assert theirs.read_bytes() == before
    assert main(["compress", str(other), "--limit", "5", "--out", str(theirs)]) == 0     # its own run: replaced


@pytest.fixture(scope="module")
def code_file(binary_run, tmp_path_factory):
    """A code file of 5 test images of ``binary_run`` (read it; write changed copies elsewhere)."""
    from zoo.experiments.compress import compress_run
    return Path(compress_run(binary_run, limit=5, out=tmp_path_factory.mktemp("code") / "ok.pzbb")["file"])


@pytest.fixture
def no_decoding(monkeypatch):
    """A code file whose header is refused must be refused before the chain runs (which takes the header's word)."""
    from zoo.evaluation.bitsback import BitsBackCoder

    def decode(*args, **kwargs):
        raise AssertionError("decoding started")
    monkeypatch.setattr(BitsBackCoder, "decode", decode)


def with_header(blob: bytes, header=None, text: bytes = None, size: int = None) -> bytes:
    """``blob`` (a code file) with its header replaced by ``header`` (any JSON) or raw ``text``, its words kept."""
    from zoo.experiments.compress import MAGIC
    start = len(MAGIC) + 5
    old = int.from_bytes(blob[len(MAGIC) + 1:start], "big")
    text = json.dumps(header).encode() if text is None else text
    size = len(text) if size is None else size
    return blob[:len(MAGIC) + 1] + size.to_bytes(4, "big") + text + blob[start + old:]


def header_of(blob: bytes) -> dict:
    from zoo.experiments.compress import MAGIC
    start = len(MAGIC) + 5
    return json.loads(blob[start:start + int.from_bytes(blob[len(MAGIC) + 1:start], "big")])


CRAFTED = {                   # what a crafted header claims (every checksum in it still matches its words)
    "200000 data": {"num_data": 200_000},
    "2**40 data": {"num_data": 2 ** 40},
    "no data": {"num_data": 0},
    "-1 data": {"num_data": -1},
    "data as text": {"num_data": "5"},
    "data as a float": {"num_data": 5.0},
    "another x_dim": {"x_dim": 65},
    "x_dim as a list": {"x_dim": [64]},
    "other levels": {"levels": 3},
    "levels as text": {"levels": "two"},
    "latent bits as text": {"latent_bits": "twelve"},
    "latent bits infinite": {"latent_bits": float("inf")},
    "latent bits 0": {"latent_bits": 0},
    "words as a float": {"num_words": 1e300},
    "run sha as a number": {"run_sha256": 7},
    "data sha as null": {"data_sha256": None},
    "an unknown split": {"split": "everything"},
}


@pytest.mark.parametrize("claim", list(CRAFTED) + ["a list", "nested 30000 deep", "header size 4 GiB",
                                                   "not UTF-8"])
def test_a_crafted_header_is_one_line_before_decoding(binary_run, code_file, tmp_path, capsys, no_decoding, claim):
    """A 571-byte code file that declares 200,000 data points decoded for ever (the checksum was checked after
    decoding); `latent_bits: "twelve"`, a header nested 30,000 deep and others gave tracebacks. Every claim of
    the header is checked (types, ranges, the run's data, the split's rows, the file's length) before decoding."""
    blob = code_file.read_bytes()
    header = header_of(blob)
    if claim == "a list":
        bad = with_header(blob, [header])
    elif claim == "nested 30000 deep":
        bad = with_header(blob, text=b"[" * 30_000 + b"]" * 30_000)
    elif claim == "header size 4 GiB":
        bad = with_header(blob, header, size=2 ** 32 - 1)
    elif claim == "not UTF-8":
        bad = with_header(blob, text=b"\xff" * 40)
    else:
        bad = with_header(blob, {**header, **CRAFTED[claim]})
    (tmp_path / "bad.pzbb").write_bytes(bad)
    capsys.readouterr()
    code = main(["compress", str(binary_run), "--decode", str(tmp_path / "bad.pzbb"), "--out",
                 str(tmp_path / "x.npy")])
    err = capsys.readouterr().err
    assert one_line_error(code, err) and "bad.pzbb" in err, err
    assert not (tmp_path / "x.npy").exists()


def test_a_fifo_is_refused_unread_even_when_a_writer_would_feed_it_a_good_code_file(binary_run, tmp_path, capsys):
    """`--decode FIFO` opened the pipe and waited for a writer. Here a writer stands ready with a valid code file,
    so a decoder that reads the pipe decodes it (exit 0, no hang); the zoo refuses it as not a regular file."""
    import os
    import threading
    import time
    code = tmp_path / "code.pzbb"
    assert main(["compress", str(binary_run), "--limit", "5", "--out", str(code)]) == 0
    payload = code.read_bytes()
    fifo = tmp_path / "pipe.pzbb"
    os.mkfifo(fifo)
    stop = threading.Event()

    def writer():                       # connect as soon as a reader opens the pipe, and write the good file
        while not stop.is_set():
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:             # no reader yet
                time.sleep(0.001)
                continue
            try:
                os.set_blocking(fd, True)
                os.write(fd, payload)
            except OSError:             # the reader closed the pipe unread
                pass
            finally:
                os.close(fd)
            return

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    capsys.readouterr()
    decoded = tmp_path / "decoded.npy"
    status = main(["compress", str(binary_run), "--decode", str(fifo), "--out", str(decoded)])
    stop.set()
    thread.join(5)
    err = capsys.readouterr().err
    assert status == 2 and "not a regular file" in err and len(err.strip().splitlines()) == 1, err
    assert not decoded.exists()


def test_a_folder_as_the_code_file_is_refused_in_one_line(binary_run, tmp_path, capsys):
    """`compress --decode FOLDER` gave a traceback (IsADirectoryError from os.fdopen, before the check of what was
    opened; found by benchmarks/fault_injection.py)."""
    folder = tmp_path / "code.pzbb"
    folder.mkdir()
    capsys.readouterr()
    code = main(["compress", str(binary_run), "--decode", str(folder), "--out", str(tmp_path / "x.npy")])
    err = capsys.readouterr().err
    assert one_line_error(code, err) and "is a folder" in err, err
    assert not (tmp_path / "x.npy").exists()


@pytest.mark.parametrize("what", ["fifo", "/dev/zero"])
@pytest.mark.slow
def test_a_code_file_that_is_not_a_regular_file_is_refused_unread(binary_run, tmp_path, what):
    """`--decode FIFO` waited for ever for a writer; `--decode /dev/zero` (here through a link) read until memory
    ran out. (The child's data segment is capped, so a regression fails instead of exhausting the machine.)"""
    import os
    import resource
    import subprocess
    import sys
    path = tmp_path / "code.pzbb"
    if what == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to(what)
    cap = 6 * 2 ** 30
    proc = subprocess.run([sys.executable, "-m", "zoo", "compress", str(binary_run), "--decode", str(path)],
                          capture_output=True, text=True, timeout=60, env=dict(os.environ, OMP_NUM_THREADS="1"),
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_DATA, (cap, cap)))
    assert one_line_error(proc.returncode, proc.stderr) and "not a regular file" in proc.stderr, proc.stderr


# -- a run trained with covariates: the data columns are coded, the covariates are side information -------------------
CVAE = '''
import pyro, pyro.distributions as dist, torch
from torch import nn

def cvae(x_dim, covariate_dim):
    """x | z, c ~ Bernoulli(sigmoid(W [z; c] + b)), z ~ N(0, I): a conditional VAE given c."""
    decoder = nn.Linear(2 + covariate_dim, x_dim)
    def model(x, covariates=None, idx=None, N=None):
        pyro.module("decoder", decoder)
        with pyro.plate("data", N, subsample=idx):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            c = covariates.expand(*z.shape[:-1], covariates.shape[-1])
            pyro.sample("x", dist.Bernoulli(logits=decoder(torch.cat([z, c], -1))).to_event(1), obs=x)
    return model
'''


@pytest.fixture(scope="module")
def covariate_run(tmp_path_factory):
    """A conditional VAE trained from the CLI on a CSV of 6 binary columns and 2 real covariates that drive them."""
    import numpy as np
    folder = tmp_path_factory.mktemp("covariates")
    (folder / "cvae.py").write_text(CVAE)
    rng = np.random.RandomState(0)
    c = rng.normal(size=(200, 2))
    x = (rng.uniform(size=(200, 6)) < 1 / (1 + np.exp(-3 * c[:, :1]))).astype(int)
    (folder / "data.csv").write_text("p0,p1,p2,p3,p4,p5,age,dose\n" + "".join(
        ",".join(map(str, row)) + f",{a:.4f},{d:.4f}\n" for row, (a, d) in zip(x, c)))
    spec = f"{folder / 'cvae.py'}:cvae"
    assert main(["train", spec, "--dataset", str(folder / "data.csv"), "--covariates", "age,dose", "--epochs", "2",
                 "--eval-samples", "2", "--out", str(folder / "run"), "--no-progress"]) == 0
    return folder / "run", spec


def test_a_run_with_covariates_codes_its_data_columns_given_them(covariate_run, tmp_path, capsys):
    """compress of a run trained with --covariates was a traceback (the coder ran the model with no x, so without
    its covariates). The data columns are coded given the covariates, -log p(x | z, c) - log p(z) + log q(z | x, c)
    bits each; --decode takes the covariates from the same rows of the run's split and gives the data columns back
    bit-exactly; bits/dim count the 6 data columns, in compress's output as in results.json."""
    import numpy as np

    from zoo.data import load_data_file
    from zoo.experiments.trained import fixed_subset
    run, spec = covariate_run
    code, decoded = tmp_path / "code.pzbb", tmp_path / "decoded.npy"
    capsys.readouterr()
    assert main(["compress", str(run), "--model", spec, "--limit", "15", "--out", str(code)]) == 0
    assert "decoded it back bit-exactly" in capsys.readouterr().out
    assert main(["compress", str(run), "--model", spec, "--decode", str(code), "--out", str(decoded)]) == 0
    config = json.loads((run / "config.json").read_text())
    rows = fixed_subset(load_data_file(config["dataset"], covariates=("age", "dose")).test, 15)
    assert np.array_equal(np.load(decoded), rows[:, :6].numpy().astype(np.uint8))
    results = json.loads((run / "results.json").read_text())
    assert results["bits_per_dim_elbo"] == pytest.approx(-results["elbo"] / (6 * np.log(2)))


def test_a_code_given_other_covariates_is_refused_and_they_change_the_code(covariate_run, tmp_path, capsys):
    """The code holds no covariates; its header's covariates_sha256 binds it to the rows it was coded with, and a
    code file whose header names other covariates is refused in one line before decoding. Given other covariates,
    the same words decode to other data (or fail): the covariates are part of what the code means."""
    from zoo.evaluation.bitsback import BitsBackCoder
    from zoo.experiments.compress import compress_run
    from zoo.experiments.run import prepare
    from zoo.experiments.trained import Invocation
    from zoo.experiments.run_folder import load_run, load_weights
    run_dir, spec = covariate_run
    compress_run(run_dir, limit=5, out=tmp_path / "ok.pzbb", invocation=Invocation(model_file=spec))
    blob = (tmp_path / "ok.pzbb").read_bytes()
    header = header_of(blob)
    for changed in ({**header, "covariates_sha256": "0" * 64}, {k: v for k, v in header.items() if k != "limit"}):
        (tmp_path / "bad.pzbb").write_bytes(with_header(blob, changed))
        capsys.readouterr()
        code = main(["compress", str(run_dir), "--model", spec, "--decode", str(tmp_path / "bad.pzbb")])
        err = capsys.readouterr().err
        assert one_line_error(code, err) and "bad.pzbb" in err, err
    state, config = load_run(run_dir, spec)
    run = prepare(config)
    load_weights(run.model, run.guide, state, run_dir / "checkpoint.pt")
    coder = BitsBackCoder(run.model, run.guide)
    assert coder.columns == tuple(range(6)) and coder.covariates == (6, 7)
    x = run.data.test[:5]
    words, _ = coder.encode(x)
    assert torch.equal(coder.decode(words, 5, covariates=x[:, 6:])[0], x[:, :6])
    from zoo.core.errors import ZooError
    try:
        other = coder.decode(words, 5, covariates=x[:, 6:] + 2.0)[0]
    except ZooError as e:                  # the chain does not end in its initial words
        other = str(e)
    assert not isinstance(other, torch.Tensor) or not torch.equal(other, x[:, :6])


def test_a_keep_best_run_is_coded_with_its_best_epoch(tmp_path_factory):
    """compress opens a run as eval does (zoo.experiments.trained): a run trained with --keep-best is coded with the
    weights its results score, its best epoch's (best.pt), not the last epoch's; the code file names them by their
    SHA-256 (it named checkpoint.pt's, so it coded with another model than the one eval, the gaps and AIS score)."""
    import hashlib
    from zoo.experiments.compress import compress_run, _code_file_run
    run = train(tmp_path_factory, "best", "--dataset", "digits", "--keep-best", "--epochs", "3")
    result = compress_run(run, limit=10)
    best, last = ((hashlib.sha256((run / name).read_bytes()).hexdigest()) for name in ("best.pt", "checkpoint.pt"))
    assert best != last and _code_file_run(Path(result["file"])) == best
    assert main(["compress", str(run), "--decode", result["file"]]) == 0
