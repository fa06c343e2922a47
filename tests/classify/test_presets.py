"""The recipe as data: presets' values, checks on construction, run keys, generated flags."""

import argparse

import pytest

from convattn.classify.presets import FAST, HOMEWORK, PRESETS, SMOKE, ClassifyConfig
from convattn.common.config import add_flags, from_args
from convattn.common.errors import UserError


def test_homework_is_the_studys_protocol():
    assert HOMEWORK == ClassifyConfig()
    assert (HOMEWORK.lrs, HOMEWORK.epochs, HOMEWORK.batch_size, HOMEWORK.optimizer,
            HOMEWORK.momentum, HOMEWORK.schedule, HOMEWORK.dropout, HOMEWORK.seed) == (
        (0.001, 0.01, 0.1), 15, 8, "sgd", 0.0, "constant", 0.2, 42)
    assert list(PRESETS) == ["homework", "fast", "smoke"]


def test_fast_and_smoke_differ_from_homework_only_where_they_say():
    def changed(config):
        return {k for k, v in config.to_dict().items() if v != HOMEWORK.to_dict()[k]}
    assert changed(FAST) == {"preset", "lrs", "epochs", "batch_size", "momentum", "nesterov",
                             "weight_decay", "schedule", "warmup", "label_smoothing",
                             "dropout", "eval_batch_size"}
    assert changed(SMOKE) == {"preset", "epochs", "train_limit", "eval_limit", "jobs"}


@pytest.mark.parametrize("changes, words", [
    ({"lrs": (0.1, -1.0)}, "--lr 0.1 -1: learning rates must be > 0"),
    ({"epochs": 0}, "--epochs 0: must be >= 1"),
    ({"threads": -1}, "--threads -1: must be >= 0"),
    ({"warmup": 1.0}, "--warmup 1: must be in [0, 1)"),
    ({"optimizer": "adam"}, "--optimizer adam: expected one of sgd, adamw"),
    ({"nesterov": True, "optimizer": "adamw", "momentum": 0.9}, "--nesterov: needs"),
])
def test_configs_built_in_code_are_checked_like_flags(changes, words):
    with pytest.raises(UserError) as error:
        HOMEWORK.replace(**changes)
    assert str(error.value).startswith(words)


def test_run_key_leaves_out_speed_only_settings_and_the_preset_name():
    key = FAST.run_key()
    assert not {"preset", "threads", "jobs", "eval_batch_size"} & set(key)
    assert key["lrs"] == [0.1] and key["schedule"] == "onecycle"
    assert FAST.replace(threads=4, jobs=2, eval_batch_size=10).run_key() == key


def test_flags_come_from_the_fields():
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="homework")
    add_flags(parser, ClassifyConfig, PRESETS, "recipe", skip=("preset",))
    assert "--preset" not in {a for action in parser._actions[2:] for a in action.option_strings}
    args = parser.parse_args(["--preset", "fast", "--lr", "0.05", "0.2", "--no-nesterov",
                              "--momentum", "0"])
    config = from_args(args, PRESETS)
    assert config == FAST.replace(lrs=(0.05, 0.2), nesterov=False, momentum=0.0)
    help_text = " ".join(parser.format_help().split())
    assert "learning rates to sweep; the best on dev is reported (homework 0.001 0.01 0.1; " \
           "fast 0.1; smoke 0.001 0.01 0.1)" in help_text
    with pytest.raises(SystemExit):
        parser.parse_args(["--augment", "rotate"])
