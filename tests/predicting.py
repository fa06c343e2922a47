"""A check shared by the tests of trained models: predict and serve caption a run's test
images as the run reported them."""

from __future__ import annotations

import torch
from PIL import Image

from convattn.cli import main
from convattn.data.captions import load_dataset
from convattn.serve.models import ModelStore, given_models


def assert_predict_and_serve_give_the_runs_captions(model, summary: dict, data_dir, capsys,
                                                    decoder: str = "attention") -> None:
    """Each test image file, captioned on its own by `caption predict` and by serve's model
    store (beam 5, the model's reranker), gets the caption the run reported."""
    dataset = load_dataset(data_dir)
    test = dataset.split("test")
    reported = [summary["captions"][im.name][decoder] for im in test]
    capsys.readouterr()
    assert main(["caption", "predict", "--model", str(model), *[str(dataset.path(im)) for im in test],
                 "--device", "cpu"]) == 0
    assert [line.split("\t")[1] for line in capsys.readouterr().out.splitlines()] == reported
    store = ModelStore(given_models([model]), torch.device("cpu"))
    served = []
    for im in test:
        with Image.open(dataset.path(im)) as img:
            served.append(store.caption("m0", img.convert("RGB"), beam=5)["caption"])
    assert served == reported
