"""Input beyond what the zoo can hold is refused in one line, exit 2, before anything is written.

Sizes from the command line (an option that sizes a tensor: components, particles, samples), seeds
beyond numpy's RNG, ``.npz`` headers that declare more than the file holds, and result files the JSON
parser cannot read: each used to end in a traceback (exit 1), some after ``config.json`` was written.
Every case runs the real CLI, ``zoo.cli.main``, and none trains: the refusal comes first.
"""
import io
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from zoo.cli import main

TINY = ["--dataset", "digits", "--epochs", "1", "--latent-dim", "2", "--hidden", "8", "--eval-samples", "2",
        "--iwae-k", "1", "--no-progress"]


def refused(capsys, argv, *mentions):
    """Run ``pyro-zoo ARGV``: exit 2 and exactly one stderr line, the zoo's error, mentioning each of ``mentions``."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pyro-zoo: error: "), err
    for text in mentions:
        assert text in lines[0], lines[0]
    return lines[0]


# -- sizes and seeds on the command line ------------------------------------------------------------------
@pytest.mark.parametrize("prior,components", [("vampprior", 10 ** 10), ("vampprior", 10 ** 11), ("mog", 10 ** 11)])
def test_prior_components_that_cannot_be_allocated_are_refused_naming_the_option(tmp_path, capsys, prior,
                                                                                  components):
    out = tmp_path / "run"
    refused(capsys, ["train", "vae", "--prior", prior, "--prior-components", components, "--out", out, *TINY],
            f"--prior-components {components}", "too large")
    assert not out.exists()


def test_particles_beyond_memory_are_refused_before_config_json(tmp_path, capsys):
    """K x batch x D likelihood terms of one step (10^10 x 100 x 64 floats) exceed any machine: refused up front,
    where it used to fail in the first step, after config.json was written."""
    out = tmp_path / "run"
    refused(capsys, ["train", "vae", "--objective", "iwae", "--particles", 10 ** 10, "--batch-size", 100,
                     "--out", out, *TINY], "--particles", "fewer particles")
    assert not out.exists()


@pytest.mark.parametrize("options, named", [
    (["--objective", "miwae", "--outer", 10 ** 11], "--outer 100000000000"),
    (["--objective", "miwae", "--outer", 10 ** 5, "--particles", 10 ** 5], "--outer 100000"),
    (["--objective", "tvo", "--partitions", 10 ** 11], "--partitions 100000000000")])
def test_sizes_an_objective_takes_beyond_memory_are_refused_before_config_json(tmp_path, capsys, options, named):
    """MIWAE holds M x K x batch x D likelihood terms per step, TVO weighs each particle at P + 1 temperatures:
    sizes beyond any machine ended in a traceback from the allocator; now refused in one line, by the memory
    estimate that refuses --particles (Options.floats_per_datum), before anything is built or written."""
    out = tmp_path / "run"
    refused(capsys, ["train", "vae", *options, "--out", out, *TINY], named, "asks for at least")
    assert not out.exists()


@pytest.mark.slow
def test_draw_steps_beyond_memory_are_refused_at_once(tmp_path):
    """`train draw --steps 10^11` printed nothing for minutes while its memory grew (a latent site per step);
    the steps' latents and canvases (T x batch x (d + D) floats) are bounded before the model is built. A
    subprocess with a time limit, as the old code never returns."""
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "zoo", "train", "draw", "--guide", "recurrent", "--steps",
                           str(10 ** 11), "--dataset", "digits", "--epochs", "1", "--no-progress", "--out", str(out)],
                          capture_output=True, text=True, timeout=60, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "--steps 100000000000 asks for at least" in proc.stderr
    assert not out.exists()


@pytest.mark.parametrize("seed", [99999999999999999999999, -1, 2 ** 32, 2 ** 32 - 1])
def test_a_seed_numpy_cannot_take_is_refused(tmp_path, capsys, seed):
    """numpy's legacy RNG (seeded by pyro.set_rng_seed) takes 0 <= seed < 2**32, and the evaluation seeds with
    seed + 12345: 2**32 - 1 used to train, then end in a traceback at the evaluation."""
    out = tmp_path / "run"
    refused(capsys, ["train", "vae", "--seed", seed, "--out", out, *TINY], "--seed", "2147483647")
    assert not out.exists()


def test_the_largest_seed_runs(tmp_path, capsys):
    assert main(["train", "vae", "--seed", str(2 ** 31 - 1), "--out", str(tmp_path / "run"), *TINY]) == 0


def test_integers_beyond_int64_are_refused_for_every_integer_option(tmp_path, capsys):
    out = tmp_path / "run"
    refused(capsys, ["train", "vae", "--checkpoint-every", 10 ** 30, "--out", out, *TINY], "--checkpoint-every",
            "at most 9223372036854775807")
    assert not out.exists()


@pytest.mark.slow
def test_eval_samples_beyond_memory_are_refused_before_training(tmp_path):
    """The harness keeps K x 100 x 3 log-weight terms per evaluation minibatch: 10^10 samples used to train, then
    loop for hours over particle chunks before failing. A subprocess with a time limit, as the old code hangs."""
    out = tmp_path / "run"
    args = [*TINY]
    args[args.index("--eval-samples") + 1] = str(10 ** 10)
    proc = subprocess.run([sys.executable, "-m", "zoo", "train", "vae", "--out", str(out), *args],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "--eval-samples" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


def test_an_allocation_that_fails_while_a_component_is_built_names_the_option():
    """The second line of defence, below the CLI: torch's allocator error becomes an OptionError for the option
    that sized the parameters (here a VampPrior's 10^10 pseudo-inputs of 64 pixels: 2.56 TB)."""
    from zoo.core.components import MODELS, OptionError
    with pytest.raises(OptionError) as info:
        MODELS.build("vae", 64, prior="vampprior", prior_components=10 ** 10)
    assert info.value.option == "prior_components" and "too large to allocate" in info.value.problem


# -- untrusted .npz data files ------------------------------------------------------------------------------
def npy_header(shape, descr="|u1"):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def write_npz(path, members, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression) as z:
        for name, data in members.items():
            z.writestr(f"{name}.npy", data)
    return path


def train_on(tmp_path, capsys, npz, *mentions):
    out = tmp_path / "run"
    line = refused(capsys, ["train", "vae", "--dataset", "binarized_mnist", "--data-dir", npz, "--out", out,
                            "--epochs", "1", "--no-progress"], str(npz), *mentions)
    assert not out.exists()
    return line


def test_an_npz_header_declaring_71_tib_is_refused_before_any_allocation(tmp_path, capsys):
    """A 878-byte .npz whose headers declare [10^11, 784] uint8 arrays (71.3 TiB): numpy allocates before reading."""
    header = npy_header((10 ** 11, 784))
    npz = write_npz(tmp_path / "huge.npz", {s: header + bytes(64) for s in ("train", "valid", "test")})
    train_on(tmp_path, capsys, npz, "'train'", "(100000000000, 784)", "78.4 TB")


def test_an_npz_header_declaring_more_than_its_member_holds_is_refused(tmp_path, capsys):
    npz = write_npz(tmp_path / "short.npz", {s: npy_header((1000, 784)) + bytes(784) for s in ("train", "valid",
                                                                                                "test")})
    train_on(tmp_path, capsys, npz, "'train'", "corrupt or truncated")


def test_an_npz_of_python_objects_is_refused_without_unpickling(tmp_path, capsys):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    npz = write_npz(tmp_path / "objects.npz", {s: buf.getvalue() for s in ("train", "valid", "test")})
    train_on(tmp_path, capsys, npz, "dtype object", "never unpickles")


def test_a_corrupt_compressed_npz_is_refused(tmp_path, capsys):
    """Damaged deflate data raises zlib.error, which the old loader did not expect."""
    arrays = {s: np.zeros((50, 784), np.uint8) for s in ("train", "valid", "test")}
    np.savez_compressed(tmp_path / "good.npz", **arrays)
    data = bytearray((tmp_path / "good.npz").read_bytes())
    for i in range(60, 90):
        data[i] ^= 0x5A
    (tmp_path / "bad.npz").write_bytes(bytes(data))
    train_on(tmp_path, capsys, tmp_path / "bad.npz", "corrupt or truncated")


def test_an_encrypted_npz_is_refused(tmp_path, capsys):
    arrays = {s: np.zeros((50, 784), np.uint8) for s in ("train", "valid", "test")}
    np.savez(tmp_path / "plain.npz", **arrays)
    data = bytearray((tmp_path / "plain.npz").read_bytes())
    i = data.find(b"PK\x01\x02")
    while i >= 0:                       # set the "encrypted" flag of every central directory entry
        data[i + 8] |= 1
        i = data.find(b"PK\x01\x02", i + 4)
    (tmp_path / "enc.npz").write_bytes(bytes(data))
    train_on(tmp_path, capsys, tmp_path / "enc.npz", "encrypted")


def malformed_npy(how: str) -> bytes:
    """An .npy file whose header NumPy's own parser rejects (or, for "negative", accepts: shape (-4, 3))."""
    good = io.BytesIO()
    np.save(good, np.zeros((4, 3), np.float32))
    blob = good.getvalue()
    return {"dtype": blob.replace(b"'<f4'", b"'<zz'"), "shape as text": blob.replace(b"(4, 3)", b"'ab'  "),
            "negative": blob.replace(b"(4, 3)", b"(-4,3)"), "unparsable": blob.replace(b"'shape'", b"'shape\\"),
            "header past the end": blob[:8] + b"\xff\xff" + blob[10:], "truncated header": blob[:20],
            "empty header": blob[:8] + b"\x00\x00"}[how]


@pytest.mark.parametrize("how", ["dtype", "shape as text", "negative", "unparsable", "header past the end",
                                 "truncated header", "empty header"])
def test_a_malformed_npy_header_is_one_line(tmp_path, capsys, how):
    """A .npy whose header is not what numpy.save writes ended in NumPy's ValueError ("descr is not a valid dtype
    descriptor", "Cannot parse header", "EOF: reading array header"): the header is the file's, so it is one
    line naming the file, from a data file and from a member of an .npz alike."""
    path = tmp_path / "data.npy"
    path.write_bytes(malformed_npy(how))
    out = tmp_path / "run"
    refused(capsys, ["train", "vae", "--dataset", path, "--out", out, *TINY[2:]], str(path), "corrupt")
    npz = write_npz(tmp_path / "data.npz", {s: malformed_npy(how) for s in ("train", "valid", "test")})
    train_on(tmp_path, capsys, npz, "corrupt")
    assert not out.exists()


@pytest.mark.parametrize("field", ["4" * 200_000, '"' + "x" * 200_000 + '"'], ids=["digits", "quoted text"])
def test_a_csv_field_over_the_field_limit_is_one_line(tmp_path, capsys, field):
    """A CSV field longer than csv.field_size_limit() (131,072 characters) ended in _csv.Error; it is one line
    naming the file and the line."""
    path = tmp_path / "data.csv"
    path.write_text("a,b\n" + "1,2\n" * 20 + f"3,{field}\n")
    out = tmp_path / "run"
    refused(capsys, ["train", "vae", "--dataset", path, "--out", out, *TINY[2:]], str(path), "line 22",
            "131072")
    assert not out.exists()


# -- untrusted result files for `pyro-zoo report` ----------------------------------------------------------------
def results_dir(tmp_path, text):
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "r.json").write_text(text)
    return folder


def report_refused(tmp_path, capsys, folder, *more_args_and_mentions, extra=()):
    before = sorted(p for p in tmp_path.rglob("*"))
    line = refused(capsys, ["report", folder, *extra], *more_args_and_mentions)
    assert sorted(p for p in tmp_path.rglob("*")) == before          # nothing written, no temporary left
    return line


def test_report_on_an_integer_of_5000_digits(tmp_path, capsys):
    folder = results_dir(tmp_path, '{"provenance": {"command": "x"}, "v": ' + "9" * 5000 + "}")
    report_refused(tmp_path, capsys, folder, "r.json", "4300 digits")


def test_report_on_100000_deep_nesting(tmp_path, capsys):
    folder = results_dir(tmp_path, '{"provenance": {"command": "x"}, "v": ' + "[" * 100000 + "]" * 100000 + "}")
    report_refused(tmp_path, capsys, folder, "r.json", "nested deeper")


def test_report_on_a_top_level_list(tmp_path, capsys):
    folder = results_dir(tmp_path, "[1, 2]")
    report_refused(tmp_path, capsys, folder, "r.json", "JSON list")


def test_report_on_a_file_that_is_not_utf8(tmp_path, capsys):
    folder = results_dir(tmp_path, "{}")
    (folder / "r.json").write_bytes(b'{"provenance": {"command": "\xff"}}')
    report_refused(tmp_path, capsys, folder, "r.json", "UTF-8")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.slow
def test_report_on_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    """A FIFO named r.json blocked `pyro-zoo report` forever (reading it waits for a writer; a link to
    /dev/zero, the same check's other case, read until memory ran out)."""
    folder = tmp_path / "results"
    folder.mkdir()
    os.mkfifo(folder / "r.json")
    try:
        done = subprocess.run([sys.executable, "-m", "zoo", "report", str(folder)], capture_output=True, text=True,
                              timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1"))
    except subprocess.TimeoutExpired:
        pytest.fail("pyro-zoo report waited for a writer of the FIFO r.json")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "not a regular file" in lines[0], done.stderr


@pytest.mark.parametrize("reader", ["open_regular", "read_bytes", "read_json"])
def test_a_folder_where_a_file_is_read_is_one_line(tmp_path, reader):
    """On Linux a folder opens for reading, and os.fdopen then raised a bare IsADirectoryError ("Is a directory: 3")
    before the folder check ran: `compress --decode FOLDER` was a traceback (benchmarks/fault_injection.py)."""
    from zoo.core import files
    from zoo.core.errors import ZooError
    folder = tmp_path / "results.json"
    folder.mkdir()
    call = {"open_regular": lambda: files.open_regular(folder, "result file").__enter__(),
            "read_bytes": lambda: files.read_bytes(folder, "result file"),
            "read_json": lambda: files.read_json(folder, "result file")}[reader]
    with pytest.raises(ZooError, match="is a folder, not a result file"):
        call()


def test_report_on_a_folder_named_like_a_result(tmp_path, capsys):
    """A folder where a file is read: os.open opens a folder read-only on Linux, and the check on the open
    descriptor came after os.fdopen, which raised IsADirectoryError, a traceback (found by
    benchmarks/fault_injection.py: `compress --decode FOLDER`; a run whose config.json is a folder did the same)."""
    folder = tmp_path / "results"
    (folder / "r.json").mkdir(parents=True)
    report_refused(tmp_path, capsys, folder, "r.json", "is a folder")


def test_report_on_a_file_too_large_for_a_result(tmp_path, capsys, monkeypatch):
    from zoo.core import files
    monkeypatch.setattr(files, "MAX_FILE_BYTES", 1000)
    folder = results_dir(tmp_path, json.dumps({"provenance": {"command": "x"}, "pad": "x" * 2000}))
    report_refused(tmp_path, capsys, folder, "r.json", "too large")


def a_run(**changes):
    """A trained run's summary as the harness writes it (with a one-epoch training curve), ``changes`` applied:
    ``config__KEY`` sets a config key."""
    run = {"label": "vae-elbo", "elbo": -100.0, "nll": 95.0, "num_data": 10, "psis_khat_frac_over_0_7": 0.0,
           "history": [{"epoch": 1, "loss": 101.0}],
           "config": {"model": "vae", "guide": "amortized", "objective": "elbo", "dataset": "digits", "seed": 0}}
    for key, value in changes.items():
        (run["config"] if key.startswith("config__") else run)[key.removeprefix("config__")] = value
    return run


HOSTILE_RUNS = {"a huge label": ({"label": "x" * 1_000_000}, "1000000 characters"),
                "a label that is a list": ({"label": ["a", "b"]}, "label is a JSON list"),
                "a list for the model": ({"config__model": ["vae", "hvae"]}, "model is a JSON list"),
                "a number for the model": ({"config__model": 7}, "model is a JSON number"),
                "an object for the guide": ({"config__guide": {"a": 1}}, "guide is a JSON object"),
                "a list for the objective": ({"config__objective": ["elbo"]}, "objective is a JSON list"),
                "a huge model name": ({"config__model": "m" * 1_000_000}, "1000000 characters"),
                "text for the elbo": ({"elbo": "high"}, "elbo is a JSON string"),
                "NaN for the elbo": ({"elbo": float("nan")}, "elbo is NaN, not a finite number"),
                "Infinity for the nll": ({"nll": float("-inf")}, "nll is -Infinity, not a finite number"),
                "a list for the nll": ({"nll": [95.0]}, "nll is a JSON list")}


@pytest.mark.parametrize("case", list(HOSTILE_RUNS))
def test_report_on_a_run_that_no_command_writes(tmp_path, capsys, case):
    """A label of a million characters ended in OSError (File name too long) after plots/ was made; a list where
    a model name belongs in TypeError (sequence item 0: expected str instance); a list for the guide in
    "unhashable type". Each is one line naming the file and the field, and nothing is written, from a result
    file and from a run folder's results.json alike."""
    changes, mention = HOSTILE_RUNS[case]
    folder = results_dir(tmp_path, json.dumps({"provenance": {"command": "python make.py"},
                                               "runs": [a_run(), a_run(**changes)]}))
    report_refused(tmp_path, capsys, folder, "r.json", mention, "fix or remove", extra=["--out", tmp_path / "pages"])
    (folder / "r.json").unlink()
    (folder / "run").mkdir()
    (folder / "run" / "results.json").write_text(json.dumps(a_run(**changes)))
    report_refused(tmp_path, capsys, folder, "results.json", mention, extra=["--out", tmp_path / "pages"])


def test_report_on_the_longest_label_in_a_long_file_name(tmp_path, capsys):
    """A label of 200 characters in a result file of a 200-character name: the plot's file name is cut to a
    length every file system takes, ending in a digest of the whole, so plots of other runs stay apart."""
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / ("r" * 200 + ".json")).write_text(json.dumps({"provenance": {"command": "python make.py"},
                                                             "runs": [a_run(label="y" * 200)]}))
    assert main(["report", str(folder), "--out", str(tmp_path / "pages")]) == 0
    (plot,) = (tmp_path / "pages" / "plots").iterdir()
    assert len(plot.name) < 255 and plot.name.startswith("r" * 100)


def good_results(tmp_path):
    return results_dir(tmp_path, json.dumps({"provenance": {"command": "python make.py"}, "runs": []}))


def test_report_out_under_a_file(tmp_path, capsys):
    folder = good_results(tmp_path)
    (tmp_path / "page").write_text("x")
    report_refused(tmp_path, capsys, folder, "--out", "is a file", extra=["--out", tmp_path / "page" / "pages"])


def test_report_out_a_folder_gets_the_pages(tmp_path, capsys):
    """--out FOLDER (existing or new) holds README.md, LEADERBOARD.md (and plots/): the pages go where it says."""
    folder = good_results(tmp_path)
    (tmp_path / "README.md").write_text("# x\n<!-- results:start -->\n<!-- results:end -->\n")
    for out in (tmp_path / "existing", tmp_path / "new" / "pages"):
        (tmp_path / "existing").mkdir(exist_ok=True)
        assert main(["report", str(folder), "--out", str(out), "--readme", str(tmp_path / "README.md")]) == 0
        assert (out / "README.md").is_file() and (out / "LEADERBOARD.md").is_file()
    assert sorted(p.name for p in folder.iterdir()) == ["r.json"]          # nothing beside the result files


def test_report_out_in_a_missing_folder(tmp_path, capsys):
    folder = good_results(tmp_path)
    report_refused(tmp_path, capsys, folder, "--out", "does not exist", extra=["--out", tmp_path / "no" / "x.md"])


def test_report_readme_a_folder(tmp_path, capsys):
    folder = good_results(tmp_path)
    report_refused(tmp_path, capsys, folder, "--readme", "is a folder", extra=["--readme", tmp_path])


def test_report_still_renders_the_good_folder(tmp_path, capsys):
    """The refusals above are not a report that refuses everything: the same folder renders with a good --out."""
    folder = good_results(tmp_path)
    (tmp_path / "README.md").write_text("# x\n<!-- results:start -->\n<!-- results:end -->\n")
    assert main(["report", str(folder), "--out", str(tmp_path / "page.md"),
                 "--readme", str(tmp_path / "README.md")]) == 0
    assert (tmp_path / "page.md").read_text().startswith("<!-- generated by 'pyro-zoo report'")


# -- gradients: its own --particles list and --repeats ------------------------------------------------------------
def test_gradients_particles_beyond_memory_are_refused(tmp_path, capsys):
    out = tmp_path / "grads"
    refused(capsys, ["gradients", "vae", "--dataset", "digits", "--objectives", "elbo", "--particles", f"1,{10 ** 10}",
                     "--repeats", "2", "--out", out], "--particles", "fewer particles")
    assert not out.exists()


@pytest.mark.slow
def test_gradients_repeats_beyond_memory_are_refused(tmp_path):
    """R x P gradient estimates are kept: 10^12 repeats of a VAE's 136,564 parameters used to run for days first.
    A subprocess with a time limit, as the old code runs on."""
    out = tmp_path / "grads"
    proc = subprocess.run([sys.executable, "-m", "zoo", "gradients", "vae", "--dataset", "digits", "--objectives",
                           "elbo", "--particles", "1", "--repeats", str(10 ** 12), "--out", str(out)],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "--repeats" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


def test_parameters_that_fit_once_but_not_for_training_are_refused(tmp_path, capsys, monkeypatch):
    """A model whose parameters can be allocated but not four times over (value, gradient, Adam's moments) would
    be killed by the kernel mid-training on an overcommitting Linux; refused at construction instead, naming the
    option furthest above its default. The machine is made small (16 MB) so that the case is cheap to build."""
    from zoo.core import memory
    monkeypatch.setattr(memory, "memory_bytes", lambda device=None: 16 * 10 ** 6)
    out = tmp_path / "run"
    args = [*TINY]
    args[args.index("--hidden") + 1] = "1200,1200"
    refused(capsys, ["train", "vae", "--out", out, *args], "--hidden 1200,1200", "16.0 MB")
    assert not out.exists()
