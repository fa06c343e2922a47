"""A reproduce folder with all four caption stages (conftest's stages_dir): every recipe's
decoders are offered, grouped by dataset and best validation score first, and each
dataset's test set is browsable a page at a time."""

from __future__ import annotations

import io
import json

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from convattn.serve.cli import build
from serving import LOCAL


@pytest.fixture(scope="module")
def stages_client(stages_dir):
    app, _ = build(None, str(stages_dir), "cpu", parallel=1)
    with TestClient(app, base_url=LOCAL) as c:
        yield c


def test_every_recipe_grouped_by_dataset_best_validation_first(stages_client):
    models = stages_client.get("/api/models").json()
    got = [(m["dataset"], m["recipe"], m["label"].rsplit(" · ", 1)[1],
            m["validation"] and (m["validation"]["metric"], m["validation"]["score"], m["validation"]["epoch"]))
           for m in models]
    assert got == [
        ("Sydney-Captions", "best-smoke", "attention, seed 42", ("CIDEr-D", 0.9, 2)),
        ("Sydney-Captions", "smoke", "attention, seed 42", ("CIDEr-D", 0.45, 2)),
        ("Sydney-Captions", "smoke", "no attention, seed 42", ("CIDEr-D", 0.40, 2)),
        ("Sydney-Captions", "best-smoke", "attention, seed 43", ("bleu4", 0.3, 2)),  # no CIDEr-D: after
        # select val_cider: the epoch with the best validation CIDEr-D, not the last
        ("RSICD", "rsicd", "attention, seed 42", ("CIDEr-D", 0.7, 2)),
        ("RSICD", "rsicd-best", "attention, seed 42", ("CIDEr-D", 0.66, 2)),
        ("RSICD", "rsicd", "no attention, seed 42", ("CIDEr-D", 0.6, 1)),  # from its result.json
    ]
    assert all(m["label"].startswith(f"{m['dataset']} · {m['recipe']} · ") for m in models)
    assert [m["validation"]["chosen"] for m in models[4:]] == ["best validation CIDEr-D"] * 3
    assert models[0]["validation"]["chosen"] == "last epoch"
    assert models[5]["rerank"] == 5  # rsicd-best's model.pt carries its reranker
    page = stages_client.get("/").text
    sydney = page.index('<optgroup label="Sydney-Captions (best validation score first)">')
    assert sydney < page.index('<optgroup label="RSICD (best validation score first)">')
    assert "(val CIDEr-D 0.900)" in page and "(val bleu4 0.300)" in page


def test_each_dataset_has_its_test_set(stages_client):
    sydney = stages_client.get("/api/testset").json()
    assert sydney["datasets"] == ["Sydney-Captions", "RSICD"] and sydney["dataset"] == "Sydney-Captions"
    assert sydney["images"] == 4
    assert [m["name"] for m in sydney["models"]] == ["caption/no_attention", "caption/attention",
                                                     "caption-best/attention"]
    assert sydney["models"][2]["label"] == "attention (best-smoke)"
    rsicd = stages_client.get("/api/testset", params={"dataset": "RSICD"}).json()
    assert rsicd["images"] == 5 and len(rsicd["rows"]) == 5
    assert [m["name"] for m in rsicd["models"]] == ["rsicd/attention", "rsicd/no_attention", "rsicd-best/attention"]
    assert {"gain:rsicd", "bleu4:rsicd-best/attention"} <= {s["value"] for s in rsicd["sorts"]}
    r = stages_client.get("/api/testset", params={"dataset": "UCM"})
    assert r.status_code == 404 and "Sydney-Captions, RSICD" in r.json()["detail"]


def test_test_set_pages_and_sorts(stages_client):
    everything = stages_client.get("/api/testset", params={"dataset": "RSICD"}).json()["rows"]
    names = [r["name"] for r in everything]
    page = stages_client.get("/api/testset", params={"dataset": "RSICD", "offset": 2, "limit": 2}).json()
    assert [r["name"] for r in page["rows"]] == names[2:4] and page["images"] == 5
    last = stages_client.get("/api/testset", params={"dataset": "RSICD", "offset": 4, "limit": 2}).json()
    assert [r["name"] for r in last["rows"]] == names[4:]
    key = "cider:rsicd/attention"
    ranked = stages_client.get("/api/testset", params={"dataset": "RSICD", "sort": key}).json()["rows"]
    scores = [r["captions"]["rsicd/attention"]["cider"] for r in ranked]
    assert scores == sorted(scores)
    backwards = stages_client.get("/api/testset", params={"dataset": "RSICD", "sort": key, "reverse": True}).json()
    assert [r["name"] for r in backwards["rows"]] == [r["name"] for r in ranked][::-1]
    r = stages_client.get("/api/testset", params={"sort": "bleu4:nobody"})
    assert r.status_code == 422 and "expected one of file, bleu4:caption/no_attention" in r.json()["detail"]
    assert stages_client.get("/api/testset", params={"limit": 0}).status_code == 422


def test_test_images_of_each_dataset(stages_client, stages_dir):
    """Both tiny datasets name a test image 219: the dataset says which one."""
    for dataset, stage in (("Sydney-Captions", "caption"), ("RSICD", "rsicd")):
        summary = json.loads((stages_dir / stage / "summary.json").read_text())
        r = stages_client.get("/api/testset/219/image", params={"dataset": dataset})
        assert r.status_code == 200
        original = Image.open(f"{summary['dataset']['path']}/images/219.png").convert("RGB")
        assert Image.open(io.BytesIO(r.content)).convert("RGB").tobytes() == original.tobytes()
    r = stages_client.get("/api/testset/nope/image", params={"dataset": "RSICD"})
    assert r.status_code == 404 and "not a test image of RSICD" in r.json()["detail"]
