"""CaptionConfig: presets as data, validation on construction, generated flags, run key."""

import argparse

import pytest

from convattn.caption import cli
from convattn.caption.encoders import DEFAULT_LAYER, EncoderSpec
from convattn.caption.presets import BEST_OF, HOMEWORK, PRESETS, CaptionConfig
from convattn.common.errors import UserError


def test_presets_keep_the_studys_values():
    assert (HOMEWORK.epochs, HOMEWORK.batch_size, HOMEWORK.lr, HOMEWORK.grad_clip, HOMEWORK.seeds) \
        == (6, 8, 4e-4, 5.0, 5)
    assert (HOMEWORK.embed_dim, HOMEWORK.hidden_dim, HOMEWORK.attention_dim, HOMEWORK.dropout) \
        == (100, 256, 100, 0.5)
    differs = {name: {k for k, v in PRESETS[name].to_dict().items() if v != HOMEWORK.to_dict()[k]}
               for name in ("fast", "smoke")}
    # fast goes beyond the study, so it chooses its checkpoint on validation (the honest protocol)
    assert differs == {"fast": {"preset", "image_size", "epochs", "seeds", "select"},
                       "smoke": {"preset", "epochs", "seeds", "image_size", "bootstrap", "meteor"}}


def test_best_presets_are_one_recipe_shortened_like_the_studys():
    best = PRESETS["best"]
    assert best.seeds == 5 and best.preset == "best"
    assert BEST_OF == {"homework": "best", "fast": "best-fast", "smoke": "best-smoke"}
    # each shortening changes what fast and smoke change in homework, nothing else
    for study, short in (("fast", "best-fast"), ("smoke", "best-smoke")):
        changed = {k: v for k, v in PRESETS[study].to_dict().items() if v != HOMEWORK.to_dict()[k]}
        assert PRESETS[short] == best.replace(**{**changed, "preset": short})
    # a recipe of its own: its runs are never the study's runs
    assert best.run_key() != HOMEWORK.run_key()


def test_one_default_feature_layer():
    assert HOMEWORK.feature_layer == EncoderSpec().layer == DEFAULT_LAYER[HOMEWORK.encoder] == "blocks"


@pytest.mark.parametrize("change, message", [
    ({"epochs": 0}, "--epochs 0: must be at least 1"),
    ({"feature_layer": "layer4"}, "--feature-layer layer4: efficientnet-lite0 has head, blocks, multi (or auto)"),
    ({"models": ("attention", "lstm")}, "--models attention lstm: expected one of no_attention, attention, transformer, prior, class-prior, nearest"),
    ({"attention_act": "gelu"}, "--attention-act gelu: expected one of tanh, relu"),
    ({"image_size": 16}, "--image-size 16: images must be at least 32 pixels"),
    ({"dropout": 1.0}, "--dropout 1: must be in [0, 1)"),
    ({"models": ()}, "--models : expected one or more of no_attention, attention, transformer"),
    ({"attention_reg": -1.0}, "--attention-reg -1: must be at least 0"),
    ({"outer_ring": "crop"}, "--outer-ring crop: expected one of keep, inward"),
])
def test_invalid_configs_name_their_flag(change, message):
    with pytest.raises(UserError) as err:
        HOMEWORK.replace(**change)
    assert str(err.value) == message


def test_run_key_leaves_out_what_is_only_reported_or_speed():
    key = HOMEWORK.run_key()
    assert not {"preset", "models", "seed", "seeds", "show", "bootstrap", "meteor", "threads"} & set(key)
    assert key["epochs"] == 6 and key["feature_layer"] == "blocks"
    assert HOMEWORK.replace(threads=2, seeds=1, show=("1",)).run_key() == key


def test_dict_round_trip():
    assert CaptionConfig.from_dict(PRESETS["fast"].to_dict()) == PRESETS["fast"]
    assert CaptionConfig.from_dict({**HOMEWORK.to_dict(), "removed_setting": 1}) == HOMEWORK


def _parse(*argv):
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    return cli.config_from_args(parser.parse_args(["caption", *argv]))


def test_flags_override_the_preset():
    assert _parse() == HOMEWORK
    config = _parse("--preset", "fast", "--epochs", "2", "--models", "attention", "--no-meteor",
                    "--show", "1", "2")
    assert config == PRESETS["fast"].replace(epochs=2, models=("attention",), meteor=False, show=("1", "2"))
    # another encoder without --feature-layer: that encoder's layer
    assert _parse("--encoder", "resnet18").feature_layer == "layer4"
    assert _parse("--feature-layer", "head").feature_layer == "head"


def test_help_lists_every_presets_value(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "10000")  # one line per flag: argparse wraps at hyphens too
    with pytest.raises(SystemExit):
        _parse("--help")
    text = " ".join(capsys.readouterr().out.split())
    assert ("training epochs (homework 6; fast 4; smoke 1; best 6; best-fast 4; best-smoke 1; "
            "rsicd 5; rsicd-fast 2; rsicd-best 5; rsicd-best-fast 2; rsicd-tuned 2; rsicd-tuned-fast 1)") in text
    for flag in ("--runs", "--resume", "--fresh", "--no-meteor", "--threads", "--feature-layer"):
        assert flag in text


def test_help_says_unset_and_names_a_value_shared_by_every_preset(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "10000")
    with pytest.raises(SystemExit):
        _parse("--help")
    text = " ".join(capsys.readouterr().out.split())
    assert "None" not in text
    assert ("(homework unset; fast 256; smoke 64; best unset; best-fast 256; best-smoke 64; "
            "rsicd unset; rsicd-fast unset; rsicd-best unset; rsicd-best-fast unset; rsicd-tuned unset; "
            "rsicd-tuned-fast unset)") in text
    assert "word embedding size (every preset: 100)" in text


def test_rsicd_presets_adapt_only_the_scale_and_the_protocol():
    from convattn.caption.presets import RSICD_OF
    rsicd = PRESETS["rsicd"]
    changed = {k for k, v in rsicd.to_dict().items() if v != HOMEWORK.to_dict()[k]}
    assert changed == {"preset", "batch_size", "lr", "epochs", "seeds", "select", "jobs"}
    assert rsicd.models == HOMEWORK.models and rsicd.select == "val_cider"
    best = PRESETS["rsicd-best"]
    assert best.models == ("attention",) and best.scst_epochs == 1 and best.rerank == 20
    assert best.run_key() != rsicd.run_key()
    for name in ("rsicd", "rsicd-best"):
        assert PRESETS[name + "-fast"] == PRESETS[name].replace(preset=name + "-fast", epochs=2, seeds=2)
    assert RSICD_OF["homework"] == RSICD_OF["fast"] == ("rsicd", "rsicd-tuned")
    tuned = PRESETS["rsicd-tuned"]  # the best recipe, its encoder's top blocks tuned in fewer epochs
    assert tuned == best.replace(preset="rsicd-tuned", tune_blocks=2, epochs=2, attention_entropy=0.015)
    assert PRESETS["rsicd-tuned-fast"] == tuned.replace(preset="rsicd-tuned-fast", epochs=1, seeds=2)


def test_the_transformer_class_defaults_are_the_configs():
    import inspect

    from convattn.caption.transformer import TransformerDecoder
    p = inspect.signature(TransformerDecoder.__init__).parameters
    assert (p["model_dim"].default, p["layers"].default, p["heads"].default, p["dropout"].default) \
        == (HOMEWORK.model_dim, HOMEWORK.layers, HOMEWORK.heads, HOMEWORK.transformer_dropout)
