"""The page in a real browser: headless Debian chromium driven by Selenium against a uvicorn
server on a free 127.0.0.1 port. Upload an image, wait for the caption, check the attention
glow the page draws pixel by pixel against the report's recipe (torch bilinear upsampling,
max scaled to 1, autumn_r colours, opacity 0.7 x weight), then the error path, a TIFF, the
out-of-domain warning beside the caption, the test set (of each dataset) and the report.
Skipped only where chromium or chromedriver is not installed (`make setup` installs them
where apt and root are available)."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from convattn.data.captions import load_dataset
from serving import running

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
VIEW = 512  # the page's large canvas
BLOCK = 40  # the test image: 4x4 flat blocks of 40 px, one per region of the 4x4 grid

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                       reason="needs Debian's chromium and chromium-driver "
                              "(/usr/bin/chromium, /usr/bin/chromedriver): apt-get install chromium "
                              "chromium-driver, or `make setup` as root"),
]


@pytest.fixture(scope="module")
def server(served):
    with running(served[0]) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1400,1300",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


def blocks_png(path: Path) -> Path:
    """160x160, a flat colour per 40x40 block: each block is one region of the model's grid
    (the model reads 128x128, 4x4 regions), and the colour under a region's centre is exact."""
    img = Image.new("RGB", (4 * BLOCK, 4 * BLOCK))
    for i in range(4):
        for j in range(4):
            img.paste((30 + 60 * j, 200 - 45 * i, 60 + 40 * ((i + j) % 3)),
                      (j * BLOCK, i * BLOCK, (j + 1) * BLOCK, (i + 1) * BLOCK))
    img.save(path)
    return path


def expected_pixels(image: Image.Image, weights: list[float], grid) -> dict:
    """The colour the page should show at each region's centre: image, then the glow."""
    heat = torch.nn.functional.interpolate(torch.tensor(weights).reshape(1, 1, *grid), size=(VIEW, VIEW),
                                           mode="bilinear", align_corners=False)[0, 0]
    heat = heat / heat.max()
    base = image.resize((VIEW, VIEW), Image.NEAREST)
    out = {}
    for i in range(grid[0]):
        for j in range(grid[1]):
            x, y = int((j + 0.5) * VIEW / grid[1]), int((i + 0.5) * VIEW / grid[0])
            h = float(heat[y, x])
            a = 0.7 * h
            glow = (255.0, 255.0 * (1 - h), 0.0)
            out[(x, y)] = [g * a + c * (1 - a) for g, c in zip(glow, base.getpixel((x, y)))]
    return out


CANVAS_PIXEL = "const d = document.getElementById('canvas').getContext('2d')" \
               ".getImageData(arguments[0], arguments[1], 1, 1).data; return [d[0], d[1], d[2]];"


def check_glow(driver, image, weights, grid):
    for (x, y), want in expected_pixels(image, weights, grid).items():
        got = driver.execute_script(CANVAS_PIXEL, x, y)
        assert max(abs(g - w) for g, w in zip(got, want)) <= 4, ((x, y), got, want)


def test_caption_attention_errors_testset_report(server, browser, client, tiny_data, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    wait = WebDriverWait(browser, 90)
    find = browser.find_element
    browser.get(server + "/")
    attention = next(m for m in client.get("/api/models").json() if m["attention"])
    Select(find(By.ID, "model")).select_by_value(attention["id"])
    path = blocks_png(tmp_path / "blocks.png")
    find(By.ID, "file").send_keys(str(path))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#caption .word"))

    # the page shows what the API answers for the same image and model
    expected = client.post("/api/caption", files={"image": ("blocks.png", path.read_bytes())},
                           data={"model": attention["id"], "beam": "1"}).json()
    words = [w.text for w in browser.find_elements(By.CSS_SELECTOR, "#caption .word")]
    assert words == expected["words"]
    assert len(browser.find_elements(By.CSS_SELECTOR, "#strip .thumb canvas")) == len(words)
    assert "on the server" in find(By.ID, "timing").text
    assert find(By.ID, "canvas").get_attribute("width") == str(VIEW)
    image, grid = Image.open(path).convert("RGB"), expected["attention"]["grid"]
    check_glow(browser, image, expected["attention"]["weights"][0], grid)
    browser.find_elements(By.CSS_SELECTOR, "#caption .word")[2].click()
    assert "selected" in browser.find_elements(By.CSS_SELECTOR, "#caption .word")[2].get_attribute("class")
    check_glow(browser, image, expected["attention"]["weights"][2], grid)
    browser.save_screenshot(str(tmp_path / "serve.png"))
    assert Image.open(tmp_path / "serve.png").size[0] > 1000

    # beam search: the top beams appear
    browser.find_element(By.CSS_SELECTOR, "input[name=decoding][value=beam]").click()
    wait.until(lambda d: d.find_element(By.ID, "beams-box").is_displayed())
    rows = browser.find_elements(By.CSS_SELECTOR, "#beams tbody tr")
    assert 1 <= len(rows) <= 3 and "beam 3" in find(By.ID, "result-model").text

    # a file that is not an image: the server's sentence, on the page
    bad = tmp_path / "notes.png"
    bad.write_text("shopping list: bread, milk\n")
    find(By.ID, "file").send_keys(str(bad))
    wait.until(lambda d: d.find_element(By.ID, "caption-error").is_displayed())
    assert "not an image Pillow can read" in find(By.ID, "caption-error").text

    # a TIFF (what Sydney-Captions ships): the browser cannot show it, the server converts it
    tif = tmp_path / "blocks.tif"
    image.save(tif)
    find(By.ID, "file").send_keys(str(tif))
    wait.until(lambda d: not d.find_element(By.ID, "caption-error").is_displayed()
               and d.find_element(By.ID, "file-name").text == "blocks.tif"
               and d.find_element(By.ID, "run").text == "Caption")
    beam3 = client.post("/api/caption", files={"image": ("blocks.tif", tif.read_bytes())},
                        data={"model": attention["id"], "beam": "3"}).json()
    assert [w.text for w in browser.find_elements(By.CSS_SELECTOR, "#caption .word")] == beam3["words"]
    check_glow(browser, image, beam3["attention"]["weights"][0], grid)

    # an image unlike every training image (noise): the warning beside the caption, with the
    # API's numbers; a training image of the run's dataset: a quiet note, no warning
    odd = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(odd)
    find(By.ID, "file").send_keys(str(odd))
    wait.until(lambda d: d.find_element(By.ID, "file-name").text == "noise.png"
               and "warning" in d.find_element(By.ID, "novelty").get_attribute("class"))
    novelty = client.post("/api/caption", files={"image": ("noise.png", odd.read_bytes())},
                          data={"model": attention["id"], "beam": "3"}).json()["novelty"]
    assert novelty["unlike_training"] is True
    assert find(By.ID, "novelty").is_displayed() and find(By.ID, "novelty").text == novelty["message"]
    assert "this image is unlike every training image" in find(By.ID, "novelty").text
    dataset = load_dataset(tiny_data)
    familiar = dataset.path(dataset.split("train")[0])
    find(By.ID, "file").send_keys(str(familiar))
    wait.until(lambda d: d.find_element(By.ID, "file-name").text == familiar.name
               and "warning" not in d.find_element(By.ID, "novelty").get_attribute("class"))
    wait.until(lambda d: d.find_element(By.ID, "novelty").text.startswith("like the training images"))

    # the test set, sorted worst first, and one of its images sent to the captioner
    find(By.ID, "tab-testset").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#testset tbody tr")) == 4)
    assert "images 1-4 of 4" in find(By.ID, "page-note").text and not find(By.ID, "dataset-field").is_displayed()
    first_row = "return document.querySelector('#testset tbody tr').dataset.name"  # atomic: rows are replaced
    first_name = browser.execute_script(first_row)
    Select(find(By.ID, "sort")).select_by_value("bleu4:caption/attention")
    # sorted by the server: the first row is no longer the file's first (attention's bleu4 1)
    wait.until(lambda d: d.execute_script(first_row) != first_name)
    first = browser.find_element(By.CSS_SELECTOR, "#testset tbody tr")
    assert "bleu4 0.000" in first.find_elements(By.TAG_NAME, "td")[3].text  # attention's column
    first.find_element(By.CSS_SELECTOR, "button").click()
    wait.until(lambda d: d.find_element(By.ID, "refs-box").is_displayed())
    assert find(By.ID, "view-caption").is_displayed()

    # the report, in its frame
    find(By.ID, "tab-report").click()
    wait.until(lambda d: d.find_element(By.ID, "report-frame").get_attribute("src"))
    browser.switch_to.frame(find(By.ID, "report-frame"))
    wait.until(lambda d: "The study's report" in d.find_element(By.TAG_NAME, "h1").text)
    browser.switch_to.default_content()

    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"
              and "/api/" not in e["message"]]  # refused uploads are logged as failed requests
    assert not errors, errors
    assert httpx.get(server + "/api/models").status_code == 200


def test_each_model_starts_from_its_runs_decoding(report_dir, browser, tmp_path):
    """A model trained with --beam 5 --rerank 20 is shown with its run's decoding, a greedy
    run's model greedily; choosing a model sets its run's decoding, and the user may change it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from convattn.caption.rerank import ConsensusReranker
    from convattn.common import io
    from convattn.serve.app import create_app
    from convattn.serve.models import ModelStore, given_models

    plain = report_dir / "caption" / "runs" / "blocks" / "attention" / "seed42" / "model.pt"
    ckpt = io.load_checkpoint(plain)
    ckpt["config"].update(beam=5, rerank=20)
    ckpt["rerank"] = ConsensusReranker(torch.randn(9, 320), [[["a", "red", "circle"]] * 5] * 9, 20).block()
    io.save_checkpoint(tmp_path / "best.pt", ckpt)
    store = ModelStore(given_models([tmp_path / "best.pt", plain]), torch.device("cpu"))
    wait = WebDriverWait(browser, 60)
    find = browser.find_element
    checked = "return document.querySelector('input[name=decoding]:checked').value"
    with running(create_app(store)) as url:
        browser.get(url + "/")
        wait.until(lambda d: d.find_element(By.ID, "run-decoding").text)
        assert Select(find(By.ID, "model")).first_selected_option.get_attribute("value") == "m0"
        assert browser.execute_script(checked) == "beam" and find(By.ID, "beam").get_attribute("value") == "5"
        assert "beam 5 + consensus rerank over 9 training images" in find(By.ID, "run-decoding").text
        find(By.ID, "file").send_keys(str(blocks_png(tmp_path / "blocks.png")))
        wait.until(lambda d: "consensus rerank" in d.find_element(By.ID, "result-model").text)
        assert "beam 5 + consensus rerank over 9 training images" in find(By.ID, "result-model").text
        # the user's choice: greedy for the same model
        find(By.CSS_SELECTOR, "input[name=decoding][value=greedy]").click()
        wait.until(lambda d: "greedy" in d.find_element(By.ID, "result-model").text)
        # the greedy run's model: greedy, and back to the first: its beam and reranking again
        Select(find(By.ID, "model")).select_by_value("m1")
        assert browser.execute_script(checked) == "greedy" and "(its run's: greedy)" in find(By.ID, "run-decoding").text
        Select(find(By.ID, "model")).select_by_value("m0")
        assert browser.execute_script(checked) == "beam" and find(By.ID, "beam").get_attribute("value") == "5"
        wait.until(lambda d: "beam 5 + consensus rerank" in d.find_element(By.ID, "result-model").text)


def test_each_datasets_test_set(stages_dir, browser):
    """A run with RSICD's stages too: the test-set view offers both datasets, and RSICD's
    rows, thumbnails and "Caption it" (with an RSICD model) work."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from convattn.serve.cli import build

    app, store = build(None, str(stages_dir), "cpu")
    wait = WebDriverWait(browser, 60)
    find = browser.find_element
    with running(app) as url:
        browser.get(url + "/#testset")
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#testset tbody tr")) == 4)
        assert find(By.ID, "dataset-field").is_displayed()
        Select(find(By.ID, "dataset")).select_by_value("RSICD")
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#testset tbody tr")) == 5)
        assert "5 test images of RSICD" in find(By.ID, "testset-summary").text
        assert "images 1-5 of 5" in find(By.ID, "page-note").text and not find(By.ID, "next").is_enabled()
        thumb = find(By.CSS_SELECTOR, "#testset tbody tr img")
        assert "dataset=RSICD" in thumb.get_attribute("src")
        wait.until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", thumb))
        find(By.CSS_SELECTOR, "#testset tbody tr button").click()
        wait.until(lambda d: d.find_element(By.ID, "refs-box").is_displayed())
        best_rsicd = next(m for m in store.info() if m["dataset"] == "RSICD")
        assert Select(find(By.ID, "model")).first_selected_option.get_attribute("value") == best_rsicd["id"]
        wait.until(lambda d: "RSICD · rsicd" in d.find_element(By.ID, "result-model").text)
