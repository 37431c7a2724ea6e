"""The benchmark scripts treat bad input as the CLI does: one line on stderr, exit code 2, nothing written."""
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.mark.parametrize("script, args, says", [
    ("discrete_mnist.py", ["--lr-decay", "0", "--runs", "cat20x10-nvil", "--epochs", "1"], "--lr-decay must be in (0, 1]"),
    ("quality_mnist.py", ["--runs", "elbo", "--elbo-epochs", "1"], "binarized MNIST is not in"),
    ("relaxed_surrogate.py", ["--runs", "cat20x10-gumbel"], "no trained and evaluated run"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, script, args, says):
    out = tmp_path / "out"
    empty = tmp_path / "no_data"
    empty.mkdir()
    r = subprocess.run([sys.executable, str(BENCHMARKS / script), "--data-dir", str(empty), "--out", str(out), *args],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists()
