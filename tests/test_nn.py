"""zoo.core.nn: the three hidden-layer nonlinearities, and the activation options that choose them."""
import pytest
import torch
from torch import nn

from zoo.core.nn import GatedDense, mlp
from zoo.registry import build_guide, build_model


def test_a_gated_layer_is_a_linear_map_times_a_sigmoid_gate():
    torch.manual_seed(0)
    layer = GatedDense(3, 2)
    x = torch.randn(5, 3)
    expected = (x @ layer.h.weight.T + layer.h.bias) * torch.sigmoid(x @ layer.g.weight.T + layer.g.bias)
    assert torch.allclose(layer(x), expected)


@pytest.mark.parametrize("activation, unit", [("tanh", nn.Tanh), ("relu", nn.ReLU), ("gated", GatedDense)])
def test_mlp_puts_the_nonlinearity_between_layers_and_keeps_the_output_linear(activation, unit):
    net = mlp((4, 8, 8, 3), activation)
    units = [m for m in net if isinstance(m, unit)]
    assert len(units) == 2 and isinstance(net[-1], nn.Linear) and net[-1].out_features == 3
    assert net(torch.zeros(2, 4)).shape == (2, 3)
    trunk = mlp((4, 8), activation, final_activation=True)
    assert isinstance(trunk[-1], unit)


def test_mlp_refuses_an_unknown_nonlinearity():
    with pytest.raises(ValueError, match="tanh, relu, gated"):
        mlp((2, 2), "sigmoid")


def test_the_encoder_mirrors_the_models_activation_unless_told_otherwise():
    model = build_model("hvae", 6, layers=(3, 2), hidden=(8,), transition_hidden=(4,), activation="gated")
    assert any(isinstance(m, GatedDense) for m in model.decoder) and any(
        isinstance(m, GatedDense) for m in model.transitions[0])
    assert build_guide("amortized", model, structured=True).activation == "gated"
    assert build_guide("iaf", model).activation == "gated"
    guide = build_guide("amortized", model, activation="relu")
    assert any(isinstance(m, nn.ReLU) for m in guide.trunk) and not any(isinstance(m, GatedDense) for m in guide.trunk)
    assert build_guide("amortized", build_model("vae", 6, hidden=(8,))).activation == "tanh"


def test_bad_activation_is_one_line_exit_2_and_no_files(tmp_path, capsys):
    from zoo.cli import main
    out = tmp_path / "run"
    assert main(["train", "vae", "--activation", "sigmoid", "--dataset", "digits", "--epochs", "1",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--activation" in err and len(err.splitlines()) == 1, err
    assert not out.exists()
