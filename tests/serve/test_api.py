"""Every endpoint through FastAPI's test client, bad requests included: each answers JSON
with a readable "detail", and the server keeps serving afterwards."""

from __future__ import annotations

import io
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from nltk.translate.bleu_score import sentence_bleu
from PIL import Image

from convattn.caption.encoders import load_image
from convattn.caption.features import cache_precision
from convattn.caption.search import greedy
from convattn.data.captions import SPECIALS, Vocabulary
from convattn.serve import app as app_module
from convattn.serve.app import create_app
from convattn.serve.catalog import given_models, report_models
from convattn.serve.models import ModelStore
from convattn.serve.uploads import MAX_BYTES
from serving import LOCAL

STATIC = Path(app_module.__file__).parent / "static"
TEMPLATES = Path(app_module.__file__).parent / "templates"


def png(size=(150, 100), colour=(40, 120, 200)) -> bytes:
    img = Image.new("RGB", size, (200, 190, 170))
    img.paste(colour, (size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2))
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def post(client, data: bytes, name="x.png", **form):
    return client.post("/api/caption", files={"image": (name, data, "application/octet-stream")},
                       data={k: str(v) for k, v in form.items()})


def models_by_kind(client) -> dict:
    return {("attention" if m["attention"] else "no_attention"): m for m in client.get("/api/models").json()}


def test_page_lists_the_models_and_fetches_nothing_from_elsewhere(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    attention = next(m for m in client.get("/api/models").json() if m["attention"])
    # the fake run decoded greedily: so does the page by default
    assert (f'<option value="{attention["id"]}" title="{attention["path"]}" data-beam="1" '
            'data-decoding="greedy" data-dataset="Sydney-Captions" selected>') in page.text
    assert '<optgroup label="Sydney-Captions (best validation score first)">' in page.text
    for m in client.get("/api/models").json():
        assert m["label"] in page.text
    # every local script and stylesheet the page names exists
    for ref in re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text):
        assert client.get(ref).status_code == 200, ref
    # no network: no absolute URL in the page, the template, or any static file
    texts = [page.text] + [p.read_text() for p in [*STATIC.iterdir(), *TEMPLATES.iterdir()]]
    for text in texts:
        assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I)


def test_models(client, fake_run):
    """Best validation CIDEr-D first: attention 0.45, no attention 0.40 (conftest)."""
    models = client.get("/api/models").json()
    assert [m["attention"] for m in models] == [True, False]
    assert [m["label"] for m in models] == ["Sydney-Captions · smoke · attention, seed 42",
                                            "Sydney-Captions · smoke · no attention, seed 42"]
    assert [m["validation"]["score"] for m in models] == [0.45, 0.40]
    assert models[1]["grid"] == [fake_run.image_size // 32] * 2
    assert models[1]["image_size"] == fake_run.image_size


def test_caption_with_attention_greedy(client, fake_run):
    model = models_by_kind(client)["attention"]
    r = post(client, png(), model=model["id"], beam=1)
    assert r.status_code == 200, r.text
    out = r.json()
    # one token per map; <end> only if the model produced it within max_steps
    tokens = out["words"][:-1] if out["words"][-1] == "<end>" else out["words"]
    assert " ".join(t for t in tokens if not t.startswith("<")) == out["caption"]
    weights = torch.tensor(out["attention"]["weights"])
    gh, gw = out["attention"]["grid"]
    assert weights.shape == (len(out["words"]), gh * gw) and (gh, gw) == (4, 4)
    torch.testing.assert_close(weights.sum(1), torch.ones(len(out["words"])), atol=1e-3, rtol=0)
    assert out["beams"] == [] and out["decoding"] == "greedy"
    assert out["image"] == {"width": 150, "height": 100, "model_input": [fake_run.image_size] * 2}
    assert 0 < out["seconds"]["features"] < out["seconds"]["total"]


def test_caption_is_the_models_own_caption_of_the_file(client, served, tmp_path):
    """The server's answer equals decoding load_image's tensor directly: same preprocessing."""
    store = served[1]
    path = tmp_path / "x.png"
    path.write_bytes(png(colour=(10, 200, 30)))
    for kind, m in models_by_kind(client).items():
        model = store.get(m["id"])
        with torch.inference_mode():
            f = model.encoder(load_image(path, model.spec.image_size)[None])
            features = cache_precision(f.flatten(2).transpose(1, 2)).float()  # as the server rounds them
            ids, _ = greedy(model.decoder, features, model.steps)
        expected = " ".join(model.vocab.decode(ids[0].tolist()))
        assert post(client, path.read_bytes(), model=m["id"]).json()["caption"] == expected, kind


def test_caption_beam_search_returns_the_top_beams(client):
    model = models_by_kind(client)["attention"]
    out = post(client, png(), model=model["id"], beam=4).json()
    assert out["decoding"] == "beam 4" and 1 <= len(out["beams"]) <= 4
    assert out["beams"][0]["caption"] == out["caption"]
    ended = [b["score"] for b in out["beams"] if b["ended"]]
    assert ended == sorted(ended, reverse=True) and all(s <= 0 for s in ended)
    assert len(out["attention"]["weights"]) == len(out["words"])


def test_caption_without_attention_has_no_maps(client):
    model = models_by_kind(client)["no_attention"]
    out = post(client, png(), model=model["id"], beam=2).json()
    assert out["attention"] is None and out["caption"] == out["beams"][0]["caption"]


def truncated(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise((300, 200), 40).convert("RGB").save(buffer, format=fmt)
    data = buffer.getvalue()
    return data[: len(data) * 2 // 3]


@pytest.mark.parametrize("data,status,words", [
    (b"", 400, "empty"),
    (b"%PDF-1.4 not a picture at all" * 20, 415, "not an image"),
    (truncated("PNG"), 400, "truncated"),
    (truncated("JPEG"), 400, "truncated"),
])
def test_bad_uploads_get_a_sentence_and_the_server_keeps_going(client, data, status, words):
    r = post(client, data, name="bad.png")
    assert r.status_code == status
    detail = r.json()["detail"]
    assert isinstance(detail, str) and words in detail and "'bad.png'" in detail
    assert "Traceback" not in r.text
    assert post(client, png()).status_code == 200


def test_decompression_bomb(client, bomb):
    r = post(client, bomb(60_000, 60_000))
    assert r.status_code == 413 and "decompression bomb" in r.json()["detail"]
    assert post(client, png()).status_code == 200


def test_upload_over_the_limit_is_refused_before_reading_it(client):
    r = post(client, b"\0" * (MAX_BYTES + 100_000))
    assert r.status_code == 413 and "limit is 20 MB" in r.json()["detail"]
    assert post(client, png()).status_code == 200


@pytest.mark.parametrize("form,status,words", [
    ({"beam": 0}, 422, "beam"),
    ({"beam": 11}, 422, "beam"),
    ({"beam": "three"}, 422, "beam"),
    ({"model": "nope"}, 404, "no model 'nope'"),
])
def test_bad_form_fields(client, form, status, words):
    r = post(client, png(), **form)
    assert r.status_code == status and words in r.json()["detail"]


def test_missing_file(client):
    r = client.post("/api/caption", data={"model": "m0"})
    assert r.status_code == 422 and r.json()["detail"].startswith("image: no file was sent")


def test_preview_turns_a_tiff_into_png(client):
    buffer = io.BytesIO()
    Image.new("RGB", (1500, 300), (1, 2, 3)).save(buffer, format="TIFF")
    r = client.post("/api/preview", files={"image": ("x.tif", buffer.getvalue())})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).size == (1024, 205)
    assert client.post("/api/preview", files={"image": ("x.tif", b"nope")}).status_code == 415


def test_concurrent_captions_agree_with_one_at_a_time(client):
    model = models_by_kind(client)["attention"]["id"]
    images = [png(colour=(30 * i, 255 - 30 * i, 90)) for i in range(4)]
    alone = [post(client, im, model=model, beam=b).json() for im in images for b in (1, 3)]
    jobs = [(im, b) for im in images for b in (1, 3)]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda job: post(client, job[0], model=model, beam=job[1]).json(), jobs * 2))
    for a, t in zip(alone * 2, together):
        assert (t["caption"], t["beams"], t["attention"]) == (a["caption"], a["beams"], a["attention"])


def test_testset_scores(client, fake_run):
    out = client.get("/api/testset").json()
    assert out["images"] == 4 and out["datasets"] == ["Sydney-Captions"]
    assert [m["name"] for m in out["models"]] == ["caption/no_attention", "caption/attention"]
    first = out["rows"][0]
    attention, no_attention = first["captions"]["caption/attention"], first["captions"]["caption/no_attention"]
    assert attention["text"] == fake_run.perfect
    assert attention["bleu4"] == pytest.approx(1.0)
    assert no_attention == {"text": fake_run.hopeless, "bleu4": 0.0, "cider": no_attention["cider"]}
    assert attention["cider"] > no_attention["cider"]
    # the study's metric, recomputed here from the references
    for row in out["rows"]:
        for c in row["captions"].values():
            expected = sentence_bleu([r.split() for r in row["references"]], c["text"].split())
            assert c["bleu4"] == pytest.approx(expected)


def test_testset_images(client, tiny_data):
    name = client.get("/api/testset").json()["rows"][0]["name"]
    r = client.get(f"/api/testset/{name}/image")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    served_pixels = Image.open(io.BytesIO(r.content)).convert("RGB")
    original = Image.open(tiny_data / "images" / f"{name}.png").convert("RGB")
    assert served_pixels.tobytes() == original.tobytes()
    small = Image.open(io.BytesIO(client.get(f"/api/testset/{name}/image?size=20").content))
    assert max(small.size) == 20
    r = client.get("/api/testset/not-there/image")
    assert r.status_code == 404 and "not a test image" in r.json()["detail"]
    assert client.get(f"/api/testset/{name}/image?size=2").status_code == 422


def test_report(client, report_dir):
    r = client.get("/report")
    assert r.status_code == 200 and r.text == (report_dir / "report.html").read_text()


def test_without_a_report(served):
    bare = TestClient(create_app(served[1], None), base_url=LOCAL)
    for url in ("/report", "/api/testset", "/api/testset/219/image"):
        r = bare.get(url)
        assert r.status_code == 404 and "make reproduce PRESET=fast" in r.json()["detail"]
    page = bare.get("/").text
    assert "make reproduce PRESET=fast" in page
    assert bare.get("/api/models").status_code == 200


def test_one_token_per_attention_map():
    vocab = Vocabulary(list(SPECIALS) + ["a", "river"])
    # <unk> (3) stays so the maps line up; the caption BLEU sees drops it
    assert vocab.tokens([4, 3, 5, 2, 0, 0]) == ["a", "<unk>", "river", "<end>"]
    assert vocab.decode([4, 3, 5, 2, 0, 0]) == ["a", "river"]
    assert vocab.tokens([4, 5, 4]) == ["a", "river", "a"]  # never ended


def test_every_decoder_of_the_run_is_offered_best_validation_first(report_dir, tmp_path):
    """Runs the summary has no validation scores for come last, in file order."""
    run = tmp_path / "run"
    shutil.copytree(report_dir, run)
    runs = run / "caption" / "runs"
    for extra in ("blocks/attention/seed43", "head/no_attention/seed42"):
        (runs / extra).mkdir(parents=True)
        shutil.copy(runs / "blocks" / "attention" / "seed42" / "model.pt", runs / extra / "model.pt")
    labels = [entry.label.removeprefix("Sydney-Captions · smoke · ") for entry in report_models(run)]
    assert labels == ["attention, seed 42", "no attention, seed 42",
                      "attention, seed 43", "no attention, seed 42, head features"]


def test_model_files_given_on_the_command_line(report_dir):
    path = report_dir / "caption" / "runs" / "blocks" / "attention" / "seed42" / "model.pt"
    store = ModelStore(given_models([str(path)]), torch.device("cpu"))
    [info] = store.info()
    assert info["label"] == "attention (.../blocks/attention/seed42/model.pt)"
    # its run folder's summary.json, found beside runs/: its dataset and validation score
    assert info["validation"]["score"] == 0.45 and info["novelty"]["threshold"] is not None


def test_no_pages_that_need_a_cdn(client):
    assert client.get("/docs").status_code == 404 and client.get("/redoc").status_code == 404
    assert "/api/caption" in client.get("/openapi.json").json()["paths"]
