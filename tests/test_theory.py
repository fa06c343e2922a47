import json

import numpy as np
import pytest

from convattn.cli import main
from convattn.common.errors import UserError
from convattn.theory import attention
from convattn.theory.answer import answer
from convattn.theory.equivariance import equivariance_checks
from convattn.theory.stack import analyse_stack, parse_input, parse_stack, stack_shapes, torch_count


def test_study_numbers_are_derived():
    result = answer()
    assert result["cnn"]["total_params"] == 10_298
    assert result["cnn"]["pool_output_shape"] == [11, 11, 8]
    assert result["cnn"]["flatten_features"] == 968
    assert [r["params"] for r in result["cnn"]["layers"]] == [608, 0, 9_690]
    assert result["mlp"]["total_params"] == 236_310
    assert result["ratio"] == 22.95


@pytest.mark.parametrize("input_shape, stack, total", [
    ((32, 32, 1), "conv:6:5 pool:2 conv:16:5 pool:2 linear:120 linear:84 linear:10", 61_706),  # LeNet-5
    ((28, 28, 1), "conv:16:3:1:1 pool:2 conv:32:3 pool:2 linear:600 linear:120 linear:10", 769_930),  # Q2's CNN
    ((9, 9, 2), "conv:4:3:2 pool:2:1 linear:5", 4 * (9 * 2 + 1) + 3 * 3 * 4 * 5 + 5),
])
def test_other_stacks_agree_with_torch(input_shape, stack, total):
    result = analyse_stack(input_shape, stack)
    assert result["total_params"] == result["torch_total_params"] == total


def test_conv_padding_defaults():
    rows = stack_shapes((28, 28, 1), parse_stack("conv:4:3:1:1 conv:4:4:2:0"))
    assert rows[0]["output_shape"] == [28, 28, 4] and rows[1]["output_shape"] == [13, 13, 4]


def test_pool_floors_and_says_so():
    rows = stack_shapes((25, 25, 1), parse_stack("pool:2"))
    assert rows[0]["output_shape"] == [12, 12, 1]
    assert rows[0]["shape_formula"] == "floor((25-2)/2)+1 = 12; 1 input row/column unused"
    assert rows[0]["unused"] == [1, 1]


def test_conv_floors_like_torch():
    # (16-5)/2 = 5.5: torch floors to 6 outputs and never reads the 16th row and column
    stack = "conv:16:3:1:1 pool:2 conv:32:5:2:0 linear:10"
    result = analyse_stack((32, 32, 3), stack)
    torch_total, torch_shape = torch_count((32, 32, 3), parse_stack(stack))
    conv = result["layers"][2]
    assert conv["output_shape"] == [6, 6, 32]
    assert conv["shape_formula"] == "floor((16-5)/2)+1 = 6; 1 input row/column unused"
    assert conv["unused"] == [1, 1]
    assert result["total_params"] == torch_total == 448 + 32 * (5 * 5 * 16 + 1) + 6 * 6 * 32 * 10 + 10
    assert result["layers"][-1]["output_shape"] == torch_shape == [10]
    assert "floor" not in result["layers"][0]["shape_formula"]  # 32+2-3 tiles with stride 1


def test_flooring_per_axis_and_padding():
    # 17 rows tile with stride 2 and padding 1, 16 columns leave the last padded column unused
    rows = stack_shapes((17, 16, 1), parse_stack("conv:2:3:2:1 pool:3"))
    assert rows[0]["output_shape"] == [9, 8, 2] and rows[0]["unused"] == [0, 1]
    assert rows[0]["shape_formula"] == ("rows ((17+2*1-3)/2)+1 = 9; columns floor((16+2*1-3)/2)+1 = 8; "
                                        "1 column of the padded input unused")
    assert rows[1]["output_shape"] == [3, 2, 2] and rows[1]["unused"] == [0, 2]
    assert rows[1]["shape_formula"].endswith("2 input columns unused")
    assert analyse_stack((17, 16, 1), "conv:2:3:2:1 pool:3")["torch_total_params"] == 20


@pytest.mark.parametrize("stack, layer", [("conv:32:5:2:0", "layer 1 'conv:32:5:2:0'"),
                                          ("conv:4:4 pool:2", "layer 2 'pool:2'")])
def test_strict_refuses_what_does_not_tile(stack, layer):
    with pytest.raises(UserError, match=f"{layer}: .* does not tile the input \\(--strict\\)"):
        analyse_stack((16, 16, 3), stack, strict=True)
    analyse_stack((16, 16, 3), stack)  # the default floors instead
    analyse_stack((17, 17, 3), "conv:32:5:2:0", strict=True)  # (17-5)/2 tiles


@pytest.mark.parametrize("stack, fragment", [
    ("", "empty"),
    ("conv:8", "layer 1 'conv:8'"),
    ("conv:8:5 blah:3", "layer 2 'blah:3'"),
    ("linear:x", "non-negative integer"),
    ("conv:0:3", "at least 1"),
    ("pool:0", "at least 1"),
    ("conv:8:40", "larger than its input"),
    ("linear:10 pool:2", "needs an image input"),
])
def test_bad_stacks_name_the_layer(stack, fragment):
    with pytest.raises(UserError, match=fragment):
        analyse_stack((28, 28, 3), stack)


@pytest.mark.parametrize("text", ["28x28", "28x28x0", "axbxc", "28*28*3"])
def test_bad_input_shape(text):
    with pytest.raises(UserError, match="--input"):
        parse_input(text)


def test_attention_algebra_at_round_off():
    att = attention.attention_checks(seed=3)
    assert att["all_rank_le_d"] and att["largest_rank_minus_d"] == 0
    for case in att["cases"]:
        assert case["rank"] == case["d"]  # generic instances have full rank d
        if case["d"] < case["n"]:
            assert case["singular_value_after_d"] <= case["rank_tolerance"]
    assert att["softmax_max_abs_diff"] < 1e-12
    assert att["invariance_max_abs_diff"] < 1e-12


def test_attention_check_can_fail():
    # the invariance needs W_K B^-T; with W_K B instead, the same check reports a large change
    rng = np.random.default_rng(0)
    X, Wq, Wk = rng.standard_normal((6, 8)), rng.standard_normal((8, 3)), rng.standard_normal((8, 3))
    B = attention.random_invertible(rng, 3)
    assert attention.head_difference(X, (Wq, Wk), attention.reparametrise(Wq, Wk, B)) < 1e-12
    assert attention.head_difference(X, (Wq, Wk), (Wq @ B, Wk @ B)) > 1e-2


def test_equivariance():
    eq = equivariance_checks(seed=1)
    assert eq["circular_max_abs_diff"] < 1e-12
    assert eq["zero_padding_interior_max_abs_diff"] < 1e-12
    assert eq["zero_padding_border_max_abs_diff"] > 1e-3  # borders are not equivariant
    assert eq["pool_invariant_fraction"] > eq["conv_unchanged_fraction"]
    assert eq["pool_relative_change"] < eq["conv_relative_change"]


def test_cli_json_keys(capsys):
    assert main(["theory", "--json", "--stack", "conv:4:3 linear:2", "--input", "8x8x1"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("cnn.total_params", "cnn.pool_output_shape", "cnn.flatten_features", "mlp.total_params",
                "ratio", "attention.max_rank", "attention.d", "attention.softmax_max_abs_diff",
                "attention.invariance_max_abs_diff", "equivariance.circular_max_abs_diff",
                "equivariance.pool_invariant_fraction", "stack.total_params", "stack.layers"):
        node = out
        for part in key.split("."):
            node = node[part]
    assert out["stack"]["total_params"] == 4 * 10 + 6 * 6 * 4 * 2 + 2
    assert out["stack"]["layers"][0]["output_shape"] == [6, 6, 4]


def test_cli_markdown_and_out(tmp_path, capsys):
    assert main(["theory", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "10,298" in text and "236,310" in text and "22.95x" in text
    assert (tmp_path / "theory.md").read_text() == text
    assert json.loads((tmp_path / "theory.json").read_text())["cnn"]["total_params"] == 10_298


def test_cli_error_is_one_line(capsys):
    assert main(["theory", "--stack", "conv:8:99"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("convattn: error: --stack layer 1")


def test_cli_floors_and_says_where(capsys):
    assert main(["theory", "--input", "32x32x3", "--stack", "conv:16:3:1:1 pool:2 conv:32:5:2:0 linear:10"]) == 0
    text = capsys.readouterr().out
    assert "| `conv:32:5:2:0` | 6x6x32 | `floor((16-5)/2)+1 = 6; 1 input row/column unused` |" in text
    assert "Total: **24,810** parameters (torch's count of the same stack: 24,810)." in text
    assert "Q1.1" not in text  # --stack prints the stack alone


def test_cli_strict_is_a_one_line_error(capsys):
    assert main(["theory", "--strict", "--input", "32x32x3",
                 "--stack", "conv:16:3:1:1 pool:2 conv:32:5:2:0 linear:10"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["convattn: error: --stack layer 3 'conv:32:5:2:0': (16+2*0-5)/2 is not an integer, so "
                   "stride 2 does not tile the input (--strict); change the stride, kernel or padding, "
                   "or drop --strict to floor like torch"]
