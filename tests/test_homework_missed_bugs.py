"""Student bugs the checks used to miss (issue 42), each a textual edit of a reference solution.

``log(sigmoid(l))`` computed naively is ``log(0) = -inf`` at large logits, where ``Bernoulli(logits=l)``
(a softplus) is finite: it used to get full marks in both assignments that compute it.
"""
import json
from pathlib import Path

import pytest

from zoo.cli import main

SOLUTIONS = Path(__file__).resolve().parents[1] / "zoo" / "homework" / "solutions"

MUTANTS = {
    "bernoulli_vae": ("reconstruction_unbiased", "    log_px = dist.Bernoulli(logits=decoder(z)).log_prob(x).sum(-1)    # [S, B]\n",
                      "    p = torch.sigmoid(decoder(z))\n    log_px = (x * torch.log(p) + (1 - x) * torch.log(1 - p)).sum(-1)\n"),
    "discrete_estimators": ("log_q", "    return Bernoulli(logits=logits, validate_args=False).log_prob(z).sum(-1)\n",
                            "    p = torch.sigmoid(logits)\n    return (z * torch.log(p) + (1 - z) * torch.log(1 - p)).sum(-1)\n"),
}


@pytest.mark.parametrize("assignment", sorted(MUTANTS))
def test_naive_log_sigmoid_fails_at_large_logits(tmp_path, capsys, assignment):
    check, old, new = MUTANTS[assignment]
    source = (SOLUTIONS / f"{assignment}.py").read_text()
    assert old in source
    scores = {}
    for name, text in (("reference", source), ("naive", source.replace(old, new))):
        (tmp_path / f"{name}.py").write_text(text)
        out = tmp_path / f"{name}.json"
        assert main(["grade", assignment, str(tmp_path / f"{name}.py"), "--only", check, "--json", str(out)]) == 0
        capsys.readouterr()
        scores[name] = json.loads(out.read_text())["checks"][0]
    assert scores["reference"]["passed"], scores["reference"]
    assert not scores["naive"]["passed"] and "1e3" in scores["naive"]["message"], scores["naive"]
