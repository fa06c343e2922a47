"""A served model whose model.pt carries a consensus reranker (trained with --rerank N)
answers a beam search with the beam its training neighbours' captions agree with most,
and says so in "decoding"; greedy decoding and models without one are unchanged. A request
without a beam size gets the model's run's decoding, and the page starts from it."""

from __future__ import annotations

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from convattn.caption.rerank import ConsensusReranker
from convattn.common import io
from convattn.serve.app import create_app
from convattn.serve.models import ModelStore, given_models
from serving import LOCAL

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def picture():
    img = Image.new("RGB", (140, 110), (200, 190, 170))
    img.paste((30, 160, 60), (30, 20, 90, 80))
    return img


@pytest.fixture(scope="module")
def plain(report_dir):
    """The fake run's random attention decoder (conftest): a model.pt without a reranker."""
    return report_dir / "caption" / "runs" / "blocks" / "attention" / "seed42" / "model.pt"


def with_reranker(plain, path, target: str):
    """plain's model.pt as a run with --beam 5 --rerank 20 writes it (the best preset's),
    with a block of 9 training images: the first one's 5 references are all `target`, the
    others' a word no beam has, and every image is a neighbour; so the beam whose caption is
    `target` is the one they agree with."""
    ckpt = io.load_checkpoint(plain)
    ckpt["config"].update(beam=5, rerank=20)
    references = [[target.split()] * 5] + [[["zzz"]] * 5] * 8
    ckpt["rerank"] = ConsensusReranker(torch.randn(9, 320), references, 20).block()
    io.save_checkpoint(path, ckpt)
    return path


def test_a_model_with_a_reranker_answers_the_beam_its_neighbours_agree_with(plain, picture, tmp_path):
    before = ModelStore(given_models([plain]), CPU)
    out = before.caption("m0", picture, beam=4)
    assert out["decoding"] == "beam 4" and before.info()[0]["rerank"] is None
    assert [b["chosen"] for b in out["beams"]] == [True] + [False] * (len(out["beams"]) - 1)
    assert all(b["consensus"] is None for b in out["beams"])
    captions = [b["caption"] for b in out["beams"]]
    # the last beam with words that is not the first: what the neighbours will agree with
    k = max(i for i, c in enumerate(captions) if c and c != captions[0])

    store = ModelStore(given_models([with_reranker(plain, tmp_path / "reranked.pt", captions[k])]), CPU)
    assert store.info()[0]["rerank"] == 9  # 20 asked for, 9 training images stored
    out = store.caption("m0", picture, beam=4)
    assert out["decoding"] == "beam 4 + consensus rerank over 9 training images"
    assert [b["caption"] for b in out["beams"]] == captions
    assert out["caption"] == captions[k] and [b["chosen"] for b in out["beams"]].index(True) == k
    consensus = [b["consensus"] for b in out["beams"]]
    assert max(consensus) == consensus[k] > 0
    # the words and attention maps are the chosen beam's
    shown = [w for w in out["words"] if not w.startswith("<")]
    assert " ".join(shown) == captions[k] and len(out["attention"]["weights"]) == len(out["words"])
    # greedy decoding has nothing to rerank
    greedy = store.caption("m0", picture, beam=1)
    assert greedy["decoding"] == "greedy" and greedy["caption"] == before.caption("m0", picture)["caption"]


def test_the_json_answer_names_the_reranking(plain, picture, tmp_path):
    store = ModelStore(given_models([with_reranker(plain, tmp_path / "reranked.pt", "a red circle")]), CPU)
    with TestClient(create_app(store), base_url=LOCAL) as client:
        assert client.get("/api/models").json()[0]["rerank"] == 9
        upload = tmp_path / "x.png"
        picture.save(upload)
        r = client.post("/api/caption", files={"image": ("x.png", upload.read_bytes(), "image/png")},
                        data={"model": "m0", "beam": "3"})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["decoding"] == "beam 3 + consensus rerank over 9 training images"
    # the caption is the chosen beam's, the one with the highest consensus (ties: the beam's order)
    [chosen] = [b for b in answer["beams"] if b["chosen"]]
    assert answer["caption"] == chosen["caption"]
    consensus = [b["consensus"] for b in answer["beams"]]
    assert all(c is not None and c >= 0 for c in consensus)
    assert consensus.index(max(consensus)) == answer["beams"].index(chosen)


def run_with_beam(plain, path, beam: int):
    """plain's model.pt as a run with --beam `beam` and no reranking writes it."""
    ckpt = io.load_checkpoint(plain)
    ckpt["config"]["beam"] = beam
    io.save_checkpoint(path, ckpt)
    return path


def test_a_request_without_a_beam_gets_the_runs_decoding(plain, picture, tmp_path):
    store = ModelStore(given_models([plain, run_with_beam(plain, tmp_path / "beam3.pt", 3),
                                     with_reranker(plain, tmp_path / "reranked.pt", "a red circle")]), CPU)
    runs = [(m["beam"], m["decoding"]) for m in store.info()]
    assert runs == [(1, "greedy"), (3, "beam 3"), (5, "beam 5 + consensus rerank over 9 training images")]
    upload = tmp_path / "x.png"
    picture.save(upload)
    with TestClient(create_app(store), base_url=LOCAL) as client:
        assert [(m["beam"], m["decoding"]) for m in client.get("/api/models").json()] == runs

        def post(model: str, **beam) -> dict:
            r = client.post("/api/caption", files={"image": ("x.png", upload.read_bytes(), "image/png")},
                            data={"model": model, **beam})
            assert r.status_code == 200, r.text
            return r.json()

        for model, (beam, decoding) in zip(("m0", "m1", "m2"), runs):
            default, chosen = post(model), post(model, beam=str(beam))
            assert default["decoding"] == decoding
            assert (default["caption"], default["beams"]) == (chosen["caption"], chosen["beams"])
        # the user's choice still holds: the reranked model, greedy or with another beam
        assert post("m2", beam="1")["decoding"] == "greedy"
        assert post("m2", beam="3")["decoding"] == "beam 3 + consensus rerank over 9 training images"
        # the page's model list carries each run's decoding (caption.js selects it with the model)
        page = client.get("/").text
        assert 'data-beam="5" data-decoding="beam 5 + consensus rerank over 9 training images"' in page
        assert 'data-beam="1" data-decoding="greedy"' in page and 'data-beam="3" data-decoding="beam 3"' in page
