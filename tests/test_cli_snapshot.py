"""``pyro-zoo --help``, ``pyro-zoo COMMAND --help`` and ``pyro-zoo list`` answer without torch or Pyro (they took
2-5 CPU-seconds loading both), from a cache that the first such request builds from the live command line, in the
user's cache folder (here ``$PYRO_ZOO_CACHE``, a test's own folder): nothing in the repository is generated."""
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
HELP_REQUESTS = (["--help"], ["-h"], ["train", "--help"], ["list", "-h"], ["compare", "--help"],
                 ["homework", "bundle", "--help"], ["grade", "--help"])
HEAVY = ("torch", "pyro", "numpy")

#: ``pyro-zoo ARGS`` through its entry point in a fresh process, then, on stderr, which of :data:`HEAVY` it imported
PROBE = f"""
import json, sys
from zoo.__main__ import main
try:
    code = main(sys.argv[1:])
except SystemExit as done:                  # the live parser exits after printing the help
    code = done.code
sys.stderr.write("\\nimported " + json.dumps([m for m in {HEAVY!r} if m in sys.modules]) + "\\n")
sys.exit(code)
"""


def pyro_zoo(args, cache, env=None, cwd=None):
    """``pyro-zoo ARGS`` with the cache folder ``cache``: its result, and which of torch, Pyro and NumPy it imported."""
    env = {**os.environ, "COLUMNS": "120", **(env or {}), "PYRO_ZOO_CACHE": str(cache)}
    r = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=300, env=env,
                       cwd=cwd)
    err, _, imported = r.stderr.rpartition("\nimported ")
    return r, set(json.loads(imported)), err.strip()


def live_answer(args, capsys, monkeypatch):
    """What :func:`zoo.cli.main` prints for ``args``, in this process, at the subprocesses' width."""
    monkeypatch.setenv("COLUMNS", "120")
    capsys.readouterr()
    if args == ["list"]:
        assert cli.main(["list"]) == 0
    else:
        with pytest.raises(SystemExit) as done:          # argparse exits after printing the help
            cli.main(args)
        assert done.value.code == 0
    return capsys.readouterr().out


def every_parser(parser, path=()):
    """``(command words, parser)`` for the parser and each subcommand's, depth first."""
    yield list(path), parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from every_parser(child, path + (name,))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A cache folder, and the first request made with it: ``pyro-zoo list``, which found no cache."""
    folder = tmp_path_factory.mktemp("cache")
    return folder, pyro_zoo(["list"], folder)


@pytest.mark.parametrize("columns", ["80", "200"])
def test_a_parser_rebuilt_from_the_cache_prints_the_live_help(monkeypatch, columns):
    monkeypatch.setenv("COLUMNS", columns)             # argparse wraps help at the terminal's width
    live = cli.build_parser()
    rebuilt = dict((tuple(words), p) for words, p in every_parser(cli_snapshot.parser_from_spec(
        json.loads(json.dumps(cli_snapshot.parser_spec(live))))))
    parsers = list(every_parser(live))
    assert len(parsers) > 10 and set(rebuilt) == {tuple(words) for words, _ in parsers}
    for words, parser in parsers:
        assert rebuilt[tuple(words)].format_help() == parser.format_help(), words


def test_the_first_request_builds_the_cache_from_the_live_command_line(cache, capsys, monkeypatch):
    folder, (r, imported, err) = cache
    assert r.returncode == 0 and not err, err[-2000:]
    assert "torch" in imported                           # no cache yet: the live registry made the answers
    assert r.stdout == live_answer(["list"], capsys, monkeypatch)
    files = list(folder.iterdir())
    assert [f.name for f in files] == [cli_snapshot.cache_file().name]     # one file, no temporary left behind
    monkeypatch.setenv("PYRO_ZOO_CACHE", str(folder))
    stored, live = cli_snapshot.load(), cli_snapshot.live()
    assert stored is not None and cli_snapshot.is_fresh(stored)
    assert {k: stored[k] for k in live} == live
    assert {"zoo/cli.py", "zoo/rules.py", "zoo/models/vae.py", "guides/amortized.py"} <= set(stored["sources"])


@pytest.mark.parametrize("args", HELP_REQUESTS + (["list"],), ids=" ".join)
def test_later_requests_import_neither_torch_nor_pyro_and_print_the_live_answer(cache, args, capsys, monkeypatch):
    folder, _ = cache
    r, imported, err = pyro_zoo(args, folder)
    assert r.returncode == 0 and not err, err[-2000:]
    assert not imported, imported
    assert r.stdout == live_answer(args, capsys, monkeypatch)


def _cache_text(folder: Path) -> str:
    return (folder / cli_snapshot.cache_file().name).read_text()


@pytest.mark.parametrize("damage", ["not JSON", "a list", "a source's hash", "another checkout's", "a path outside",
                                    "a parser that is not one", "half a parser", "empty"])
def test_a_damaged_or_foreign_cache_is_not_read(cache, tmp_path, capsys, monkeypatch, damage):
    """The cache is input from outside the zoo: anything but the file the zoo wrote, for this checkout and these
    sources, is no cache at all (``load`` returns None, or the answer is left to the live command line)."""
    folder, _ = cache
    stored = json.loads(_cache_text(folder))
    path = next(iter(stored["sources"]))
    texts = {"not JSON": '{"format": 1, "list": "tr', "a list": "[1, 2]", "empty": "",
             "a source's hash": json.dumps({**stored, "sources": {**stored["sources"], path: "0" * 64}}),
             "another checkout's": json.dumps({**stored, "root": "/elsewhere"}),
             "a path outside": json.dumps({**stored, "sources": {"zoo/../../etc/passwd.py": "0" * 64}}),
             "a parser that is not one": json.dumps({**stored, "parser": {**stored["parser"], "arguments": [
                 {"kind": "version", "option_strings": ["-V"], "dest": "version", "group": 1}]}}),
             "half a parser": json.dumps({**stored, "parser": {"prog": "pyro-zoo"}})}
    monkeypatch.setenv("PYRO_ZOO_CACHE", str(tmp_path))
    cli_snapshot.cache_file().write_text(texts[damage])
    loaded = cli_snapshot.load()
    if damage == "a source's hash":                      # as a cache made before the source file changed
        assert loaded is not None and not cli_snapshot.is_fresh(loaded)
    elif "parser" in damage:                            # fresh, so answered from, until the parser is rebuilt
        assert loaded is not None and cli_snapshot.is_fresh(loaded)
        assert cli_snapshot.answer(["--help"]) is None and capsys.readouterr().out == ""
    else:
        assert loaded is None


def test_a_corrupt_cache_is_rebuilt_and_the_answer_is_the_live_one(cache, tmp_path, capsys, monkeypatch):
    folder, _ = cache
    target = tmp_path / cli_snapshot.cache_file().name
    target.write_text(_cache_text(folder)[:1000])        # cut short, as by a full disk
    r, imported, err = pyro_zoo(["list"], tmp_path)
    assert r.returncode == 0 and not err and "torch" in imported, err[-2000:]
    assert r.stdout == live_answer(["list"], capsys, monkeypatch)
    assert target.read_text() == _cache_text(folder)     # written whole again


def test_a_cache_folder_that_cannot_be_written_leaves_the_answer_to_the_live_registry(tmp_path, capsys, monkeypatch):
    (tmp_path / "a file").write_text("")
    r, imported, err = pyro_zoo(["train", "--help"], tmp_path / "a file" / "cache")     # no folder can be made there
    assert r.returncode == 0 and not err and "torch" in imported, err[-2000:]
    assert r.stdout == live_answer(["train", "--help"], capsys, monkeypatch)


@pytest.mark.slow
def test_a_request_the_rebuilt_parser_cannot_parse_gets_the_live_error(cache):
    """``--epochs x --help``: the rebuilt parser reads strings, so the live parser answers."""
    r, imported, err = pyro_zoo(["train", "--epochs", "x", "--help"], cache[0])
    assert r.returncode == 2 and "torch" in imported
    assert err.splitlines() == [
        "pyro-zoo: error: argument --epochs: invalid int value: 'x' (see 'pyro-zoo train --help')"]


@pytest.mark.slow
def test_components_added_by_an_installed_package_turn_the_cache_off(cache, tmp_path):
    """The cache cannot know a plug-in's components: with one installed, list is the live one (here: the
    plug-in's import error, which shows that it was looked for)."""
    info = tmp_path / "zoo_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: zoo-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[pyro_zoo.models]\nmy_model = zoo_plugin_missing:MyModel\n")
    r, imported, err = pyro_zoo(["list"], cache[0], env={"PYTHONPATH": f"{tmp_path}:{ROOT}"})
    assert r.returncode == 2 and "torch" in imported and "model plug-in 'my_model'" in err, err[-2000:]


def test_the_console_script_is_the_light_entry_point_and_nothing_generated_is_packaged():
    """``pyro-zoo`` is ``zoo.__main__:main``, as ``python -m zoo`` is: signal handlers first, then the cache."""
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    assert setup["options.entry_points"]["console_scripts"].split() == ["pyro-zoo", "=", "zoo.__main__:main"]
    assert "zoo" not in setup["options.package_data"]


@pytest.mark.slow
def test_a_changed_source_file_makes_the_cache_stale(tmp_path):
    """A model added to the registry (one file, one import line) is in `pyro-zoo list` and `train --help` at once:
    the cache knows the source files it was made from, so in a copy of the packages with a model added after the
    cache was built, the next request is answered live and rebuilds it, and the one after answers from it."""
    for package in cli_snapshot.PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    env, cache = {"PYTHONPATH": str(tmp_path), "COLUMNS": "200"}, tmp_path / "cache"
    first, imported, _ = pyro_zoo(["list"], cache, env=env, cwd=tmp_path)
    assert first.returncode == 0 and "torch" in imported and "\n  bernoulli_mixture " not in first.stdout
    shutil.copy(ROOT / "tests" / "fixtures" / "bernoulli_mixture.py", tmp_path / "zoo" / "models")
    init = tmp_path / "zoo" / "models" / "__init__.py"
    init.write_text(init.read_text() + "from zoo.models.bernoulli_mixture import BernoulliMixture\n")
    for rebuilds in (True, False):
        listed, imported, err = pyro_zoo(["list"], cache, env=env, cwd=tmp_path)
        assert listed.returncode == 0 and ("torch" in imported) == rebuilds, err[-2000:]
        assert "\n  bernoulli_mixture " in listed.stdout
    helped, imported, _ = pyro_zoo(["train", "--help"], cache, env=env, cwd=tmp_path)
    assert helped.returncode == 0 and not imported and "--components" in helped.stdout, helped.stdout[-2000:]
