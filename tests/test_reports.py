"""`pyro-zoo report`: the results pages are rendered from the result files, so no figure is typed by hand.

The committed benchmarks/results/README.md and README.md's results block are what the report renders
from the committed JSON files; a figure in a table is the figure in its file; a broken result file is
one line, exit 2, and nothing written.
"""
import json
import re
import shutil
from pathlib import Path

import pytest

from zoo.cli import main
from zoo.evaluation import reports
from zoo.evaluation.reliability import is_unreliable
from zoo.evaluation.report_config import CONFIG_NAME, Reference, ReportConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CONFIG = load_config(RESULTS)


def run_cli(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def results_copy(tmp_path):
    """benchmarks/results copied under a repository-like folder with a README that has a results block."""
    copy = tmp_path / "repo" / "benchmarks" / "results"
    shutil.copytree(RESULTS, copy)
    (tmp_path / "repo" / "README.md").write_text(f"# repo\n\n{reports.START}\nold\n{reports.END}\n\ntail\n")
    return copy


def test_committed_pages_are_in_sync_with_the_result_files(capsys):
    code, out, err = run_cli(["report", str(RESULTS), "--readme", str(ROOT / "README.md"), "--check"], capsys)
    assert code == 0, err
    assert "up to date" in out


def test_readme_results_block_is_what_the_report_renders():
    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index(reports.START):readme.index(reports.END) + len(reports.END)]
    assert block == reports.render_readme_block(reports.load_results(RESULTS), CONFIG, "benchmarks/results/")
    headline = json.loads((RESULTS / "headline_elbo.json").read_text())["runs"][0]
    assert f"| {headline['nll']:.2f} |" in block      # the VAE headline figure is there, and came from its file


def test_readme_component_tables_are_the_registry():
    """The user guide's model/guide/objective/dataset tables are generated from the registrations: every
    registered name has its row, with its registered description."""
    from zoo.registry import GUIDES, MODELS
    readme = (ROOT / reports.CATALOG).read_text()
    block = readme[readme.index(reports.REGISTRY_START):readme.index(reports.REGISTRY_END) + len(reports.REGISTRY_END)]
    assert block == reports.render_registry_block()
    for table in (MODELS, GUIDES):
        for name, component in table.items():
            assert f"| `{name}` | {component.description.replace('|', chr(92) + '|')} |" in block


def test_a_table_figure_equals_the_value_in_its_json():
    """The headline NLL of the KL-warm-up VAE, read back from the rendered table, is its file's `nll`."""
    name, label = "headline_elbo.json", "elbo"
    run = next(r for r in json.loads((RESULTS / name).read_text())["runs"] if r["label"] == label)
    lines = (RESULTS / "README.md").read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(f"| `{label}` |") and f"({name})" in line)
    header = next(lines[i] for i in range(at, -1, -1) if lines[i].startswith("| run |"))
    column = {c.strip(): k for k, c in enumerate(header.strip("|").split("|"))}
    cells = [c.strip() for c in lines[at].strip("|").split("|")]
    neg_elbo, nll = float(cells[column["test −ELBO"]]), float(cells[column["test NLL (IS)"]])
    assert nll == pytest.approx(run["nll"], abs=0.005)
    assert neg_elbo == pytest.approx(-run["elbo"], abs=0.005)


def test_every_reference_is_compared_with_the_measured_figure():
    """'met' is measured minus published: for the IWAE row, NLL − 87.10 (Burda et al.'s figure, which
    benchmarks/results/report.json declares and applies to the VAE trained with a multi-sample bound)."""
    run = reports.load_results(RESULTS)["quality_mnist_iwae520.json"]["runs"]
    iwae = next(r for r in run if r["label"] == "iwae")
    (ref,) = CONFIG.references_for(iwae["config"])
    assert ref.value == "87.10"
    d = iwae["nll"] - 87.10
    _, met = reports._reference_cells(iwae, CONFIG)
    assert met == f"NLL {'yes' if d <= 0 else 'no'}, {'−' if d < 0 else '+'}{abs(d):.2f}"


def test_a_malformed_result_file_is_one_line_exit_2_and_nothing_written(results_copy, capsys):
    page, readme = results_copy / "README.md", results_copy.parents[1] / "README.md"
    before = {p: p.read_text() for p in (page, readme)}
    (results_copy / "broken.json").write_text('{"provenance": {"command": "x"}, "runs": [')
    code, out, err = run_cli(["report", str(results_copy)], capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("pyro-zoo: error:") and "broken.json" in err
    assert {p: p.read_text() for p in (page, readme)} == before
    assert not list(results_copy.parent.rglob("*.tmp")) and not list(readme.parent.glob(".*.tmp"))


def test_a_result_file_without_its_command_is_refused(results_copy, capsys):
    (results_copy / "anonymous.json").write_text(json.dumps({"runs": []}))
    code, out, err = run_cli(["report", str(results_copy)], capsys)
    assert code == 2 and "anonymous.json" in err and "command" in err


@pytest.mark.slow
def test_report_writes_both_pages_and_check_then_passes(results_copy, capsys):
    page, readme = results_copy / "README.md", results_copy.parents[1] / "README.md"
    page.write_text("stale\n")
    code, out, err = run_cli(["report", str(results_copy), "--check"], capsys)
    assert code == 2 and "out of date" in err and err.count("\n") == 1
    assert page.read_text() == "stale\n"                         # --check writes nothing
    code, out, err = run_cli(["report", str(results_copy)], capsys)
    assert code == 0, err
    assert page.read_text() == (RESULTS / "README.md").read_text()
    text = readme.read_text()
    assert text.startswith("# repo\n") and text.endswith("\n\ntail\n") and "old" not in text
    assert "](benchmarks/results/headline_elbo.json)" in text   # links from the README's folder
    code, out, err = run_cli(["report", str(results_copy), "--check"], capsys)
    assert code == 0, err


def test_a_figure_typed_by_hand_in_the_template_is_refused(results_copy, capsys):
    template = results_copy / reports.TEMPLATE_NAME
    template.write_text(template.read_text() + "\nThe VAE reached 88.64 nats.\n")
    code, out, err = run_cli(["report", str(results_copy)], capsys)
    assert code == 2 and "88.64" in err and "typed by hand" in err


def test_an_unknown_placeholder_names_its_line(results_copy, capsys):
    template = results_copy / reports.TEMPLATE_NAME
    template.write_text("# x\n\n{{ quality_mnist.json | runs/nosuchrun/nll }}\n")
    code, out, err = run_cli(["report", str(results_copy)], capsys)
    assert code == 2 and "line 3" in err and "nosuchrun" in err


def test_a_placeholder_broken_across_lines_is_refused_not_passed_through():
    results = {"a.json": {"provenance": {"command": "python a.py"}, "runs": [{"label": "x", "n": 3}]}}
    assert reports.render_template("{{ a.json | runs/x/n }}", results) == "3"
    with pytest.raises(Exception, match="line 1: a placeholder's '{{' and '}}' must be on the same line"):
        reports.render_template("n = {{ a.json |\nruns/x/n }}", results)
    assert reports.render_template("```\n{{ not a placeholder\n```\n", results).startswith("```")
    assert reports.render_template("`f{{x}` and\n    {{ indented code\n", results).startswith("`f{{x}`")


def test_placeholders_render_values_references_and_tables():
    results = {"a.json": {"provenance": {"command": "python a.py"},
                          "runs": [{"label": "x", "elbo": -90.456, "n": 3, "ratio": 1.0449}]}}
    config = ReportConfig(references={"paper": Reference("neg_elbo", "101.5", "A et al. 2017", "a model")})
    text = reports.render_template("{{ a.json | runs/x/neg_elbo }} {{ a.json | runs/0/n }} "
                                   "{{ a.json | runs/x/ratio | x }} {{ reference | paper }}", results, config=config)
    assert text == "90.46 3 1.04× 101.5"
    with pytest.raises(Exception, match="no reference 'paper'.*report.json"):
        reports.render_template("{{ reference | paper }}", results)
    assert "`python a.py`" in reports.render_template("{{ table sources }}", results)


@pytest.mark.parametrize("page", ["README.md", str(reports.CATALOG)])
def test_readme_prose_types_no_figure_by_hand(page):
    """Outside code and the generated blocks, the README and the user guide quote no decimal figure."""
    readme = (ROOT / page).read_text()
    for start, end in ((reports.START, reports.END), (reports.REGISTRY_START, reports.REGISTRY_END)):
        if start in readme:
            readme = readme[:readme.index(start)] + readme[readme.index(end):]
    prose = re.sub(r"```.*?```", "", readme, flags=re.S)
    prose = "\n".join(l for l in prose.splitlines() if not l.startswith("    "))
    prose = re.sub(r"`[^`]*`", "", prose)
    assert not re.findall(r"(?<![\w.])\d+\.\d+", prose)


def test_include_inlines_the_tables_a_benchmark_wrote_beside_its_json(tmp_path):
    """{{ include FILE.json }} renders the Markdown tables of FILE.md (the same script's output), and refuses a
    result file without one, or one without a table, naming the file."""
    (tmp_path / "a.json").write_text(json.dumps({"provenance": {"command": "python a.py"}, "x": 1}))
    (tmp_path / "a.md").write_text("# A\n\nCommand: `python a.py`\n\n| k | v |\n|---|---|\n| x | 1 |\n\nprose\n\n"
                                   "| second | table |\n|---|---|\n")
    (tmp_path / "b.json").write_text(json.dumps({"provenance": {"command": "python b.py"}}))
    results = reports.load_results(tmp_path)
    assert reports.render_template("{{ include a.json }}", results) == (
        "| k | v |\n|---|---|\n| x | 1 |\n\n| second | table |\n|---|---|")
    with pytest.raises(Exception, match="b.json has no b.md beside it"):
        reports.render_template("{{ include b.json }}", results)
    (tmp_path / "b.md").write_text("no table here\n")
    with pytest.raises(Exception, match="b.md holds no Markdown table"):
        reports.render_template("{{ include b.json }}", reports.load_results(tmp_path))


def test_include_keeps_the_caption_that_tells_tables_with_the_same_columns_apart(tmp_path):
    """A line ending in a colon just above a table is its caption and comes with it (the trajectory tables of
    KL on test images, KL on training images and NLL share their columns); other prose does not."""
    (tmp_path / "t.json").write_text(json.dumps({"provenance": {"command": "python t.py"}}))
    (tmp_path / "t.md").write_text("# T\n\nProtocol: prose, not a caption.\n\n| e | 1 |\n|---|---|\n\n"
                                   "KL on the test images:\n\n| e | 1 |\n|---|---|\n| a | 3.0 |\n\n"
                                   "Test NLL:\n\n| e | 1 |\n|---|---|\n| a | 90.0 |\n")
    assert reports.render_template("{{ include t.json }}", reports.load_results(tmp_path)) == (
        "| e | 1 |\n|---|---|\n\nKL on the test images:\n\n| e | 1 |\n|---|---|\n| a | 3.0 |\n\n"
        "Test NLL:\n\n| e | 1 |\n|---|---|\n| a | 90.0 |")


def test_leaderboard_is_the_best_run_per_model_guide_objective_with_its_curve():
    """Each (model, guide, objective) on static MNIST has one row, the lowest NLL among its runs on all test
    images, and a plot drawn from that run's history sits beside it on disk."""
    page = (RESULTS / reports.LEADERBOARD_NAME).read_text()
    results = reports.load_results(RESULTS)
    rows = reports.leaderboard_runs(results, CONFIG)

    def key(config):
        return reports.model_label(config, CONFIG), config["guide"], config["objective"]
    keys = [key(r["config"]) for _, r in rows]
    assert len(keys) == len(set(keys)) and ("sbn", "amortized", "rloo") in keys and ("vae + vampprior", "amortized",
                                                                                    "elbo") in keys
    for name, run in rows:
        c = run["config"]
        rivals = [r for n, r in reports._training_runs(results) if r["config"].get("dataset") == "binarized_mnist"
                  and key(r["config"]) == key(c) and r["num_data"] == run["num_data"]
                  and not reports._rescored(results, n, r)]
        assert not any(is_unreliable(run) and not is_unreliable(r) for r in rivals)    # a reliable NLL wins first
        assert run["nll"] == min(r["nll"] for r in rivals if is_unreliable(r) == is_unreliable(run))
        assert f"[`{run['label']}`]({name})" in page
        plot = reports.plot_path(name, run)
        assert (RESULTS / plot).is_file() and f'<img src="{plot}" alt="training of {run["label"]}"' in page
    flags = [is_unreliable(run) for _, run in rows]
    assert flags == sorted(flags)               # one dataset here: the reliable entries first
    assert "](README.md)" in page               # the archive of every run


def _summary(model, guide, nll, share, num_data=270):
    return {"label": f"{guide}", "config": {"model": model, "guide": guide, "objective": "elbo", "dataset": "d"},
            "elbo": -nll - 3, "nll": nll, "psis_khat_frac_over_0_7": share, "num_data": num_data, "num_samples": 100}


def test_an_unreliable_nll_is_marked_and_ranked_after_the_reliable_ones():
    """The compare of the issue: a meanfield VAE's NLL (20.42, but 92.2% of data with k-hat > 0.7) came first.
    It is marked and ranked after the reliable entries; within one entry a reliable run beats an unreliable one."""
    results = {"r.json": {"provenance": {"command": "x"}, "runs": [
        _summary("vae", "meanfield", 20.42, 0.922), _summary("vae", "amortized", 26.29, 0.02),
        _summary("vae", "iaf", 26.34, 0.05), dict(_summary("vae", "iaf", 25.0, 0.5), label="iaf-unreliable")]}}
    order = [(run["config"]["guide"], run["label"]) for _, run in reports.leaderboard_runs(results)]
    assert order == [("amortized", "amortized"), ("iaf", "iaf"), ("meanfield", "meanfield")]
    board = reports.render_leaderboard(results)
    meanfield = next(line for line in board.splitlines() if line.startswith("| vae · meanfield · elbo |"))
    assert "| 92% ⚠ |" in meanfield and "⚠" not in next(line for line in board.splitlines()
                                                        if line.startswith("| vae · amortized · elbo |"))
    assert "lower is better" in board and "k̂>0.7: the share of data" in board     # the legend
    readme = reports.render_readme_block(results, ReportConfig(headline=(("r.json", "meanfield"),)), "")
    assert "| k̂ only: 92% ⚠ |" in readme and "lower is better" in readme
    runs = reports.table_runs(results)
    assert "92% ⚠ unreliable" in runs and "lower is better" in runs



def test_a_checkpoint_scored_again_does_not_displace_its_training_run_on_the_leaderboard():
    """The headline and AIS files score a committed checkpoint again, without its training history: a lower NLL
    there (Monte Carlo noise of the same model) leaves the training run, with its curve, on the leaderboard."""
    trained = dict(_summary("vae", "amortized", 86.31, 0.02), history=[{"epoch": 1, "loss": 90.0, "valid_elbo": -91.0}])
    again = dict(_summary("vae", "amortized", 86.30, 0.02), label="again")
    for rescored in ({"r.json": {"provenance": {"command": "x"}, "runs": [trained]},
                      "a.json": {"provenance": {"command": "y"}, "runs": [dict(again, checkpoint="c")]}},
                     {"r.json": {"provenance": {"command": "x"}, "runs": [trained]},
                      "h.json": {"provenance": {"command": "y"}, "checkpoint": "c", "runs": [again]}}):
        assert [(name, run["label"]) for name, run in reports.leaderboard_runs(rescored)] == [("r.json", "amortized")]
    plain = {"r.json": {"provenance": {"command": "x"}, "runs": [trained, again]}}    # no checkpoint named: it counts
    assert [run["label"] for _, run in reports.leaderboard_runs(plain)] == ["again"]

def _tiny_run(out, *extra):
    assert main(["train", "vae", "--epochs", "2", "--eval-samples", "5", "--iwae-k", "5", "--latent-dim", "2",
                 "--no-progress", "--out", str(out), *extra]) == 0


def test_report_on_a_folder_of_the_users_own_runs(tmp_path, capsys, monkeypatch):
    """Run folders of 'pyro-zoo train' record their config, not a command: the report takes them as the
    user's runs and draws the same leaderboard, with each run's curve and samples, touches no README above,
    and writes nothing into the run folders: its pages go to reports/NAME/ under the current directory, or where
    --out says, and link back to the runs from there."""
    runs = tmp_path / "runs"
    _tiny_run(runs / "a")
    _tiny_run(runs / "b", "--objective", "iwae", "--particles", "2")
    (tmp_path / "README.md").write_text(f"{reports.START}\nmine\n{reports.END}\n")
    before = sorted(p.relative_to(runs) for p in runs.rglob("*") if p.name != ".pyro-zoo.lock")
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    code, out, err = run_cli(["report", "runs"], capsys)
    assert code == 0, err
    pages = tmp_path / "reports" / "runs"
    board = (pages / reports.LEADERBOARD_NAME).read_text()
    assert "## `digits`" in board and "[`a`](../../runs/a/) (your run)" in board
    assert "[`b`](../../runs/b/) (your run)" in board
    assert '<img src="../../runs/a/samples.png" alt="samples of a"' in board
    assert (pages / "plots" / "a.png").is_file()
    assert "[its config](../../runs/a/config.json)" in (pages / "README.md").read_text()
    assert (tmp_path / "README.md").read_text() == f"{reports.START}\nmine\n{reports.END}\n"
    assert sorted(p.relative_to(runs) for p in runs.rglob("*") if p.name != ".pyro-zoo.lock") == before
    code, out, err = run_cli(["report", "runs", "--check"], capsys)
    assert code == 0, err
    code, out, err = run_cli(["report", "runs/a", "--out", "pages/of-a"], capsys)   # one run folder, --out a folder
    assert code == 0, err
    assert "[`a`](../../runs/a/) (your run)" in (tmp_path / "pages" / "of-a" / reports.LEADERBOARD_NAME).read_text()
    assert sorted(p.relative_to(runs) for p in runs.rglob("*") if p.name != ".pyro-zoo.lock") == before


def test_a_run_whose_results_were_edited_by_hand_is_refused(tmp_path, capsys, monkeypatch):
    """`report` took a hand-edited figure of a run folder's results.json (here the NLL lowered by a nat) into its
    pages without a word, where `compare --resume` refuses the same file (found by benchmarks/fault_injection.py).
    The results a run writes are sealed (content_sha256); one whose seal no longer holds is one line, exit 2,
    nothing written. A results.json without a seal (written before runs were sealed) is reported as it is."""
    run = tmp_path / "runs" / "a"
    _tiny_run(run)
    path = run / "results.json"
    results = json.loads(path.read_text())
    monkeypatch.chdir(tmp_path)
    path.write_text(json.dumps({**results, "nll": results["nll"] - 1.0}, indent=2))
    capsys.readouterr()
    code, out, err = run_cli(["report", "runs"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and str(Path("runs") / "a" / "results.json") in lines[0] \
        and "edited" in lines[0], err
    assert not (tmp_path / "reports").exists()
    path.write_text(json.dumps({k: v for k, v in results.items() if k != "content_sha256"}, indent=2))
    code, out, err = run_cli(["report", "runs"], capsys)
    assert code == 0, err


def test_the_library_knows_no_benchmark():
    """What only this repository's benchmarks know (the papers' figures and whom they apply to, the headline
    runs, the order of models, the tables of the benchmark scripts' files) is in benchmarks/results/report.json,
    not in the library that renders any folder of runs."""
    source = "\n".join(p.read_text() for p in (ROOT / "zoo" / "evaluation").glob("report*.py"))
    known = {*CONFIG.references, *(r.cite for r in CONFIG.references.values()), *(f for f, _ in CONFIG.headline),
             *CONFIG.leaderboard_model_order, *CONFIG.runs_model_order, *CONFIG.leaderboard_datasets,
             *(s.flag for s in CONFIG.settings), *(t for t in CONFIG.tables if t not in reports.TABLES)}
    assert known and not [k for k in sorted(known) if re.search(rf"(?<![\w-]){re.escape(k)}(?![\w-])", source)]


def test_a_table_declared_in_report_json_renders_any_result_file(tmp_path):
    """A table of report.json takes its rows from each result file (a mapping's items carry their key), keeps the
    rows that have its 'with' field, and fills each cell from the first alternative that applies: a template
    whose fields are present, one whose 'when' matches the row, or a lookup keyed by the row."""
    (tmp_path / "a.json").write_text(json.dumps({
        "provenance": {"command": "python a.py"}, "ratios": {"k1 n=2": 1.5},
        "rows": {"k1": {"x": 1.23456, "n": 2, "flag": True}, "k2": {"x": None, "n": 1}, "k3": {"x": 2.0}}}))
    (tmp_path / "b.json").write_text(json.dumps({"provenance": {"command": "python b.py"}, "rows": [{"x": -0.5, "n": 3}]}))
    (tmp_path / CONFIG_NAME).write_text(json.dumps({"tables": {"t": {"rows": "rows", "with": "n", "columns": [
        ["name", ["`{key}`", "(list)"]], ["x", "{x:.3f}"], ["n", [{"when": {"n": 1}, "cell": "one"}, "{n}"]],
        ["flag", [{"when": {"flag": True}, "cell": "yes"}, "no"]],
        ["ratio", {"lookup": "/ratios", "key": "{key} n={n}", "format": "x"}]]}}}))
    text = reports.render_template("{{ table t }}", reports.load_results(tmp_path), config=load_config(tmp_path))
    assert text.splitlines() == [
        "| name | x | n | flag | ratio | source |", "|---|---|---|---|---|---|",
        "| `k1` | 1.235 | 2 | yes | 1.50× | [a.json](a.json) ([command](#cmd-a)) |",
        "| `k2` | – | one | no | – | [a.json](a.json) ([command](#cmd-a)) |",
        "| (list) | −0.500 | 3 | no | – | [b.json](b.json) ([command](#cmd-b)) |"]


def test_the_compression_table_shows_the_whole_files_rate_beside_the_payloads(results_copy):
    """The compression table showed the rate of the code's words only, without the code file's header (435 bytes,
    about 0.2 bits/dim on the 270 test images of the 17-level digits). A result that records the whole file's
    rate (compress's file_bits_per_dim) shows it beside the payload's; one that predates it shows a dash."""
    path = results_copy / "compression.json"
    data = json.loads(path.read_text())
    digits = data["rows"][0]
    dims = digits["num_data"] * digits["x_dim"]
    digits.update(file_bits=digits["bits"] + 8 * 435, file_bits_per_dim=(digits["bits"] + 8 * 435) / dims)
    path.write_text(json.dumps(data))
    table = reports.render_template("{{ table compression }}", reports.load_results(results_copy),
                                    config=load_config(results_copy)).splitlines()
    head = [c.strip() for c in table[0].split("|")]
    payload, whole = head.index("BB-ANS bits/dim"), head.index("file bits/dim")
    rows = [[c.strip() for c in line.split("|")] for line in table[2:]]
    assert rows[0][payload] == f"{digits['bits_per_dim']:.4f}"
    assert rows[0][whole] == f"{digits['file_bits_per_dim']:.4f}"
    assert float(rows[0][whole]) - float(rows[0][payload]) == pytest.approx(8 * 435 / dims, abs=1e-4)
    assert rows[1][whole] == "–"


def test_a_new_reference_is_one_rule_in_report_json(results_copy, capsys):
    """A published figure reaches the pages by data alone: a rule comparing the two-layer VAE with Burda et al.'s
    figure puts it, and the measured figure minus it, on the leaderboard row that had none."""
    config = json.loads((results_copy / CONFIG_NAME).read_text())
    config["compare_with"].append({"match": {"dataset": "binarized_mnist", "model": "hvae"}, "references": ["burda-hvae"]})
    (results_copy / CONFIG_NAME).write_text(json.dumps(config))
    code, out, err = run_cli(["report", str(results_copy)], capsys)
    assert code == 0, err
    board = (results_copy / reports.LEADERBOARD_NAME).read_text()
    before = [row for row in (RESULTS / reports.LEADERBOARD_NAME).read_text().splitlines() if row.startswith("| hvae · ")]
    unreferenced = {row.split(" | ")[0] for row in before if " et al. " not in row}      # rows no earlier rule matched
    hvae = [row for row in board.splitlines() if row.split(" | ")[0] in unreferenced]
    assert hvae and all("| NLL 86.76, Burda et al. 2016: " in row for row in hvae)
    assert "Burda et al. 2016" not in before[0]


@pytest.mark.parametrize("config, message", [
    ('{"headline": 3}', "headline is a JSON number, expected a JSON list"),
    ('{"references": {"p": {"metric": "nll", "value": "1", "cite": "c"}}}', "references/p: no 'what'"),
    ('{"tables": {"t": {"rows": "r", "columns": [["head only"]]}}}', "tables/t/columns/0: expected [HEAD, CELL]"),
    ('{"sections": []}', "unknown key 'sections'"),
    ('{"compare_with": [{"match": {"model": "m"}, "references": ["nowhere"]}]}', "no reference 'nowhere'"),
    ('{"references": {"p": {"metric": "bits", "value": "1", "cite": "c", "what": "w"}}}', "metric is 'nll' or"),
])
def test_a_bad_report_json_is_one_line_exit_2_and_nothing_written(results_copy, capsys, config, message):
    page = results_copy / "README.md"
    before = page.read_text()
    (results_copy / CONFIG_NAME).write_text(config)
    code, out, err = run_cli(["report", str(results_copy)], capsys)
    assert code == 2 and err.count("\n") == 1 and CONFIG_NAME in err and message in err
    assert page.read_text() == before


def test_without_report_json_a_declared_table_is_refused_naming_where_it_is_declared(results_copy, capsys):
    (results_copy / CONFIG_NAME).unlink()
    code, out, err = run_cli(["report", str(results_copy)], capsys)
    assert code == 2 and err.count("\n") == 1 and "no table 'relaxed'" in err and CONFIG_NAME in err


def test_the_leaderboard_row_of_a_cell_pooled_over_seeds_shows_the_bits_per_dim_of_its_mean(tmp_path, capsys):
    """Two seeds of one grid cell on the 64 binary pixels of the digits: the row's NLL is the mean over the seeds
    and its bits/dim that mean's, nats / (64 ln 2), not seed 0's beside it (issue 53, 5a)."""
    import math
    from zoo.evaluation.estimators.bits_per_dim import bits_per_dim
    config = {"model": "vae", "guide": "amortized", "objective": "elbo", "dataset": "digits", "epochs": 2}
    for seed, nll in ((0, 32.33), (1, 33.33)):
        folder = tmp_path / "runs" / "grid" / f"amortized-elbo-seed{seed}"
        folder.mkdir(parents=True)
        result = {"config": {**config, "seed": seed}, "split": "test", "num_data": 270, "num_samples": 20,
                  "elbo": -(nll + 1), "log_likelihood": -nll, "nll": nll, "log_likelihood_se": 0.01,
                  "psis_khat_frac_over_0_7": 0.0, "epochs_trained": 2, **bits_per_dim(2, 64, nll + 1, nll)}
        (folder / "results.json").write_text(json.dumps(result))
    code, _, err = run_cli(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "README.md")], capsys)
    assert code == 0, err
    row, = [line for line in (tmp_path / "LEADERBOARD.md").read_text().splitlines() if line.startswith("| vae · ")]
    cells = [c.strip() for c in row.split("|")]
    assert cells[3].startswith("32.83 ± 0.50 (2 seeds)")
    assert cells[4] == f"{32.83 / (64 * math.log(2)):.4f}" != f"{32.33 / (64 * math.log(2)):.4f}"


def test_a_run_whose_results_are_another_runs_is_refused(tmp_path, capsys, monkeypatch):
    """Two runs' results.json swapped (each sealed, each a true result of some run): `report` labelled each row by
    its folder and showed that folder's samples beside the other run's figures (the fault-injection run's lost
    case). A results.json whose run is not its folder's config.json (model, guide, objective, options, data, seed)
    is one line, exit 2, nothing written; a run evaluated again since (other evaluation settings) is still its own."""
    runs = tmp_path / "runs"
    _tiny_run(runs / "a")
    _tiny_run(runs / "b", "--objective", "iwae", "--particles", "2")
    a, b = (runs / "a" / "results.json"), (runs / "b" / "results.json")
    monkeypatch.chdir(tmp_path)
    mine = a.read_text()
    a.write_text(b.read_text())
    b.write_text(mine)
    capsys.readouterr()
    code, out, err = run_cli(["report", "runs"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "is not the results of the run in its folder" in lines[0] \
        and "objective" in lines[0], err
    assert not (tmp_path / "reports").exists()
    b.write_text(a.read_text())
    a.write_text(mine)
    assert main(["eval", str(runs / "a"), "--eval-samples", "7", "--force", "--no-progress"]) == 0
    code, out, err = run_cli(["report", "runs"], capsys)
    assert code == 0, err


def test_the_template_splits_into_pages_listed_by_the_index_with_links_pointed_at_their_page(tmp_path, capsys):
    """`<!-- page: NAME.md -->` starts a page; the index lists each by its first heading where `<!-- pages -->` is, a
    link to an anchor another page holds (a heading, an `<a id>`) is pointed there, one it holds itself is left, and a
    page that would overwrite a result file's table is refused in one line."""
    (tmp_path / reports.TEMPLATE_NAME).write_text(
        "# Results\n\nSee [the speed](#speed-of-things) and [a command](#cmd-x).\n\n## More\n\n<!-- pages -->\n\n"
        "<!-- page: fast.md -->\n## Speed of things\n\nBack to [the top](#results); [here](#speed-of-things).\n\n"
        "<!-- page: where.md -->\n## Sources\n\n| <a id=\"cmd-x\"></a>x |\n")
    pages = reports.render_results_pages(tmp_path, {}, reports.GENERIC)
    assert list(pages) == ["README.md", "fast.md", "where.md"]
    index = pages["README.md"]
    assert "- [Speed of things](fast.md)\n- [Sources](where.md)" in index
    assert "[the speed](fast.md#speed-of-things)" in index and "[a command](where.md#cmd-x)" in index
    assert "[the top](README.md#results)" in pages["fast.md"] and "[here](#speed-of-things)" in pages["fast.md"]
    assert pages["fast.md"].startswith(reports.GENERATED_NOTE + "[← all results](README.md)\n\n# Speed of things\n")
    (tmp_path / "fast.json").write_text("{}")
    with pytest.raises(reports.ZooError, match="would overwrite the table of the result file fast.json"):
        reports.render_results_pages(tmp_path, {}, reports.GENERIC)


def test_a_page_marker_in_what_the_template_includes_is_text_not_a_page(tmp_path, monkeypatch):
    """Only the template's own markers split pages: one inside a result file's included table or code block (review)
    stays where it is and makes no page."""
    (tmp_path / reports.TEMPLATE_NAME).write_text("# Results\n\nINCLUDED\n\n<!-- page: fast.md -->\n## Speed\n")
    real = reports.render_template
    monkeypatch.setattr(reports, "render_template", lambda template, *a, **k: real(template, *a, **k).replace(
        "INCLUDED", "```\n<!-- page: evil.md -->\n```"))
    pages = reports.render_results_pages(tmp_path, {}, reports.GENERIC)
    assert list(pages) == ["README.md", "fast.md"] and "<!-- page: evil.md -->" in pages["README.md"]
