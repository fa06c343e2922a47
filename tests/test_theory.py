import json

import pytest

from convattn import theory
from convattn.cli import main
from convattn.common.errors import UserError


def test_study_numbers_are_derived():
    result = theory.answer()
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
    result = theory.analyse_stack(input_shape, stack)
    assert result["total_params"] == result["torch_total_params"] == total


def test_conv_padding_defaults():
    rows = theory.stack_shapes((28, 28, 1), theory.parse_stack("conv:4:3:1:1 conv:4:4:2:0"))
    assert rows[0]["output_shape"] == [28, 28, 4] and rows[1]["output_shape"] == [13, 13, 4]


def test_pool_floors_and_says_so():
    rows = theory.stack_shapes((25, 25, 1), theory.parse_stack("pool:2"))
    assert rows[0]["output_shape"] == [12, 12, 1]
    assert rows[0]["shape_formula"].startswith("floor")


@pytest.mark.parametrize("stack, fragment", [
    ("", "empty"),
    ("conv:8", "layer 1 'conv:8'"),
    ("conv:8:5 blah:3", "layer 2 'blah:3'"),
    ("linear:x", "non-negative integer"),
    ("conv:0:3", "at least 1"),
    ("pool:0", "at least 1"),
    ("conv:8:40", "larger than its input"),
    ("conv:8:5:2", "not an integer"),
    ("linear:10 pool:2", "needs an image input"),
])
def test_bad_stacks_name_the_layer(stack, fragment):
    with pytest.raises(UserError, match=fragment):
        theory.analyse_stack((28, 28, 3), stack)


@pytest.mark.parametrize("text", ["28x28", "28x28x0", "axbxc", "28*28*3"])
def test_bad_input_shape(text):
    with pytest.raises(UserError, match="--input"):
        theory.parse_input(text)


def test_attention_algebra_at_round_off():
    att = theory.attention_checks(seed=3)
    assert att["all_rank_le_d"]
    for case in att["cases"]:
        assert case["rank"] == case["d"]  # generic instances have full rank d
        if case["d"] < case["n"]:
            assert case["singular_value_after_d"] <= case["rank_tolerance"]
    assert att["softmax_max_abs_diff"] < 1e-12
    assert att["invariance_max_abs_diff"] < 1e-12


def test_attention_check_can_fail():
    # the invariance needs B^-T on W_K; B itself would change P, and the measure sees it
    import numpy as np
    rng = np.random.default_rng(0)
    X, Wq, Wk = rng.standard_normal((6, 8)), rng.standard_normal((8, 3)), rng.standard_normal((8, 3))
    B = rng.standard_normal((3, 3)) + 3 * np.eye(3)
    p1 = theory._softmax_rows((X @ Wq) @ (X @ Wk).T)
    p2 = theory._softmax_rows((X @ Wq @ B) @ (X @ Wk @ B).T)
    assert np.abs(p1 - p2).max() > 1e-3


def test_equivariance():
    eq = theory.equivariance_checks(seed=1)
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
