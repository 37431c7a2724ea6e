"""``pyro-zoo --help``, ``pyro-zoo COMMAND --help`` and ``pyro-zoo list`` answer without torch or Pyro
(they took 2-5 CPU-seconds loading both), from a snapshot that is the live command line's."""
import argparse
import configparser
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from zoo import cli, cli_snapshot

ROOT = Path(__file__).resolve().parents[1]
REGENERATE = "run 'python -m zoo.cli_snapshot' to regenerate zoo/cli_snapshot.json"
HELP_REQUESTS = (["--help"], ["-h"], ["train", "--help"], ["list", "-h"], ["compare", "--help"],
                 ["homework", "bundle", "--help"], ["grade", "--help"])


def every_parser(parser, path=()):
    """``(command words, parser)`` for the parser and each subcommand's, depth first."""
    yield list(path), parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from every_parser(child, path + (name,))


def test_the_snapshot_is_the_live_command_line():
    stored, live = cli_snapshot.load(), cli_snapshot.live()
    assert stored is not None, REGENERATE
    assert cli_snapshot.is_fresh(stored), f"a source file it was made from changed: {REGENERATE}"
    assert stored["entry_point_groups"] == live["entry_point_groups"], REGENERATE
    assert stored["list"] == live["list"], f"'pyro-zoo list' changed: {REGENERATE}"
    assert stored["parser"] == live["parser"], f"the command line's flags changed: {REGENERATE}"


@pytest.mark.parametrize("columns", ["80", "200"])
def test_a_parser_rebuilt_from_the_snapshot_prints_the_live_help(monkeypatch, columns):
    monkeypatch.setenv("COLUMNS", columns)             # argparse wraps help at the terminal's width
    live = cli.build_parser()
    rebuilt = dict((tuple(words), p) for words, p in every_parser(cli_snapshot.parser_from_spec(
        json.loads(json.dumps(cli_snapshot.parser_spec(live))))))
    parsers = list(every_parser(live))
    assert len(parsers) > 10 and set(rebuilt) == {tuple(words) for words, _ in parsers}
    for words, parser in parsers:
        assert rebuilt[tuple(words)].format_help() == parser.format_help(), words


def _zoo(args, **kwargs):
    """``python -X importtime -m zoo ARGS``: its result, and the top-level packages it imported."""
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "zoo", *args], capture_output=True, text=True,
                       timeout=300, **kwargs)
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in r.stderr.splitlines()
                if line.startswith("import time:")}
    return r, imported


@pytest.mark.parametrize("args", HELP_REQUESTS + (["list"],), ids=" ".join)
def test_help_and_list_import_neither_torch_nor_pyro_and_print_the_live_answer(args, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "120")
    r, imported = _zoo(args)
    assert r.returncode == 0, r.stderr[-2000:]
    assert not imported & {"torch", "pyro", "numpy"}, sorted(imported & {"torch", "pyro", "numpy"})
    if args == ["list"]:
        assert cli.main(["list"]) == 0
    else:
        with pytest.raises(SystemExit) as done:          # argparse exits after printing the help
            cli.main(args)
        assert done.value.code == 0
    assert r.stdout == capsys.readouterr().out


@pytest.mark.slow
def test_a_request_the_snapshot_cannot_parse_gets_the_live_error():
    """``--epochs x --help``: the snapshot's parser reads strings, so the live parser answers."""
    r, imported = _zoo(["train", "--epochs", "x", "--help"])
    assert r.returncode == 2 and "torch" in imported
    assert [line for line in r.stderr.splitlines() if not line.startswith("import time:")] == [
        "pyro-zoo: error: argument --epochs: invalid int value: 'x' (see 'pyro-zoo train --help')"]


@pytest.mark.slow
def test_components_added_by_an_installed_package_turn_the_snapshot_off(tmp_path):
    """The snapshot cannot know a plug-in's components: with one installed, list is the live one (here: the
    plug-in's import error, which shows that it was looked for)."""
    info = tmp_path / "zoo_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: zoo-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[pyro_zoo.models]\nmy_model = zoo_plugin_missing:MyModel\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}:{ROOT}"}
    r, imported = _zoo(["list"], env=env)
    assert r.returncode == 2 and "torch" in imported and "model plug-in 'my_model'" in r.stderr, r.stderr[-2000:]


def test_the_console_script_is_the_light_entry_point():
    """``pyro-zoo`` is ``zoo.__main__:main``, as ``python -m zoo`` is: signal handlers first, then the snapshot."""
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    assert setup["options.entry_points"]["console_scripts"].split() == ["pyro-zoo", "=", "zoo.__main__:main"]
    assert "cli_snapshot.json" in setup["options.package_data"]["zoo"]


@pytest.mark.slow
def test_a_stale_snapshot_is_not_answered_from(tmp_path):
    """A model added to the registry (one file, one import line) was missing from `pyro-zoo list` until someone
    regenerated the snapshot; the snapshot knows the source files it was made from, so in a copy of the packages
    with a model added and the snapshot as it was, `list` and `train --help` are answered live and show it."""
    for package in cli_snapshot.PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    assert cli_snapshot.is_fresh(json.loads((tmp_path / "zoo" / "cli_snapshot.json").read_text()))
    shutil.copy(ROOT / "tests" / "fixtures" / "bernoulli_mixture.py", tmp_path / "zoo" / "models")
    init = tmp_path / "zoo" / "models" / "__init__.py"
    init.write_text(init.read_text() + "from zoo.models.bernoulli_mixture import BernoulliMixture\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    listed, imported = _zoo(["list"], env=env, cwd=tmp_path)
    assert listed.returncode == 0 and "torch" in imported, listed.stderr[-2000:]
    assert "\n  bernoulli_mixture " in listed.stdout
    helped, _ = _zoo(["train", "--help"], env={**env, "COLUMNS": "200"}, cwd=tmp_path)
    assert helped.returncode == 0 and "--components" in helped.stdout, helped.stdout[-2000:]
    assert "--components" not in json.dumps(cli_snapshot.load()["parser"])    # the snapshot did not know it
