"""The command line's process tuning (zoo.cli_process, zoo.core.process): torch's read-only data pages are mapped in,
and with the command line's malloc setting a freed 64 MiB tensor's pages are reused, not faulted in again; one switch,
PYRO_ZOO_PROCESS_TUNING=0, turns both off.

Checked in the kernel's own counts (resident pages of a mapping, page faults), not in seconds, in fresh processes;
the speed that follows is ``benchmarks/kernel_state.py``'s.
"""
import json
import platform
import subprocess
import sys

from pathlib import Path

import pytest

from zoo import cli, cli_process
from zoo.core import process

PROBE = """
import json, resource, torch
from zoo.cli_process import keep_freed_memory
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def cycle():                      # an evaluation chunk's logits: allocated, written, freed
    t = torch.empty(1 << 24)
    t.fill_(1.0)
    del t
def count():
    for _ in range(10):           # glibc settles its heap over the first few
        cycle()
    before = faults()
    for _ in range(5):
        cycle()
    return faults() - before
plain = count()
kept = keep_freed_memory()
print(json.dumps({"plain": plain, "kept": kept, "faults": count()}))
"""

PAGES = (1 << 24) * 4 // 4096        # the pages of one such tensor


GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


@pytest.mark.slow
@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_freed_chunks_are_reused_where_the_setting_is_made_and_faulted_in_again_where_not():
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["plain"] >= 4 * PAGES                 # glibc's default: each cycle's tensor is new pages
    assert out["kept"] is True
    assert out["faults"] < PAGES // 10               # five cycles, not one tensor's worth of new pages


@pytest.mark.parametrize("env", [{"PYRO_ZOO_PROCESS_TUNING": "0"}, {"MALLOC_TRIM_THRESHOLD_": "131072"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"}])
def test_the_users_own_malloc_settings_and_the_opt_out_are_left_alone(env, monkeypatch):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cli_process.keep_freed_memory() is False    # returns before it touches malloc


MAPPED = """
import json, torch
from pathlib import Path
from zoo.core.process import _read_only_mappings, _torch_cpu_library, map_torch_constants
lib = _torch_cpu_library(torch)
def resident():
    spans = set(_read_only_mappings(lib))
    total, rss, inside = 0, 0, False
    for line in open("/proc/self/smaps"):
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            start, end = (int(v, 16) for v in head.split("-"))
            inside = (start, end) in spans
            total += (end - start) * inside
        elif inside and head == "Rss:":
            rss += int(line.split()[1]) * 1024
    return rss, total
before, total = resident()
mapped = map_torch_constants()
after, _ = resident()
print(json.dumps({"before": before, "after": after, "total": total, "mapped": mapped, "again": map_torch_constants()}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux's /proc/self/smaps")
def test_every_read_only_page_of_torchs_cpu_library_is_resident_after_mapping_and_not_before():
    done = subprocess.run([sys.executable, "-c", MAPPED], capture_output=True, text=True, check=True)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["total"] > 1 << 20 and out["mapped"] == out["total"]
    assert out["before"] < 0.9 * out["total"]           # a fresh process has touched only part of them
    assert out["after"] >= 0.999 * out["total"]         # all of them, so no masked load meets an absent page
    assert out["again"] == 0                            # once per process


def test_an_unreadable_proc_leaves_the_process_as_it_is(monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError("no /proc here")
    monkeypatch.setattr(process, "_MAPPED", None)
    monkeypatch.setattr(process, "_read_only_mappings", refuse)
    assert process.map_torch_constants() == 0


def test_the_switch_turns_the_mapping_off_before_it_reads_proc(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("read /proc/self/maps with the tuning off")
    monkeypatch.setenv(process.SWITCH, "0")
    monkeypatch.setattr(process, "_MAPPED", None)
    monkeypatch.setattr(process, "_read_only_mappings", refuse)
    assert cli_process.tune_process() == {"kept_freed_memory": False, "mapped_bytes": 0}


def test_the_command_line_tunes_its_process_once_per_command(monkeypatch, capsys):
    """``fit`` and ``evaluate`` map torch's constants for any caller; the malloc setting is the command line's
    alone, made before the command runs."""
    calls = []
    monkeypatch.setattr(cli_process, "tune_process", lambda: calls.append("tuned"))
    assert cli.main(["list"]) == 0
    assert calls == ["tuned"]
