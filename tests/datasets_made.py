"""Tiny RSICD- and Sydney-shaped sources, generated, and the pins that check them.

    tiny_rsicd(root)  -> RsicdSource: JPEGs named 00000.jpg ..., an RSICD.csv as VT-RSBS lays
                         it out, the source dataset.json (to compare with), and pins
    tiny_sydney(root) -> SydneySource: a zip like the mirror's (Sydney_captions/dataset.json
                         naming .tif files, Sydney_captions/imgs/N.tif) and its pins
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from convattn.data import manifests
from convattn.data.rsicd import RsicdPins
from convattn.data.sydney import SydneyPins
from tiny_captions import make_tiny_captions


@dataclass
class RsicdSource:
    images: dict[str, bytes]
    csv: bytes
    dataset: dict  # the generated dataset.json the source was made from
    pins: RsicdPins


@dataclass
class SydneySource:
    zip: bytes
    dataset: dict
    pins: SydneyPins


def tiny_rsicd(root: Path, base_url: str = "http://unused/", captions_url: str = "http://unused/RSICD.csv",
               **sizes) -> RsicdSource:
    made = make_tiny_captions(root, names="{:05d}.jpg", **sizes)
    dataset = json.loads((made / "dataset.json").read_text())
    images = {e["filename"]: (made / "images" / e["filename"]).read_bytes() for e in dataset["images"]}
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["", "filename", "img_id", "split", "label", "sent_id", "sentence"])
    for i, e in enumerate(dataset["images"]):
        raws = [s["raw"].removesuffix(" .").capitalize() for s in e["sentences"]]
        writer.writerow([i, e["filename"], 10000 + i, e["split"], e["sentences"][0]["tokens"][1],
                         repr([s["sentid"] for s in e["sentences"]]), repr(raws)])
    data = out.getvalue().encode()
    pins = RsicdPins(manifest={n: (hashlib.sha256(b).hexdigest(), len(b)) for n, b in images.items()},
                     images_url=base_url, captions_url=captions_url,
                     captions_sha256=hashlib.sha256(data).hexdigest(), official_zip_sha256="0" * 64)
    return RsicdSource(images, data, dataset, pins)


def zip_of(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return out.getvalue()


def tiny_sydney(root: Path, url: str = "http://unused/Sydney_captions.zip", **sizes) -> SydneySource:
    made = make_tiny_captions(root, **sizes)
    pins = SydneyPins(manifest=manifests.parse_sydney(manifests.sydney_manifest(made)), url=url)
    dataset = json.loads((made / "dataset.json").read_text())
    files = {}
    for entry in dataset["images"]:
        tif = io.BytesIO()
        Image.open(made / "images" / entry["filename"]).save(tif, "TIFF")
        entry["filename"] = Path(entry["filename"]).stem + ".tif"
        files[f"Sydney_captions/imgs/{entry['filename']}"] = tif.getvalue()
    files = {"Sydney_captions/dataset.json": json.dumps(dataset).encode(), **files}
    return SydneySource(zip_of(files), dataset, pins)
