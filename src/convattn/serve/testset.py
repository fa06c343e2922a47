"""The test set of a `reproduce` run, as the page's explorer shows it.

Read from the run's caption/summary.json: each test image's five references and each
model's caption (first seed, as the report shows them). Scored here per image, once per
process: `bleu4` is the study's metric (nltk sentence_bleu, uniform 1- to 4-gram weights, no
smoothing; `caption.metrics.bleu4_per_image`), CIDEr-D is pycocoevalcap's with the idf of
these test references, as in the report. Images are served as PNG (browsers cannot show
Sydney's TIFFs), optionally shrunk for thumbnails, and kept in a small cache.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from convattn.caption import metrics
from convattn.common import io as cio
from convattn.common.errors import UserError
from convattn.serve.models import NAMES

CACHE_IMAGES = 256  # PNGs kept in memory: the 58 Sydney test images at two sizes fit


class TestSet:
    def __init__(self, report_dir: Path):
        path = Path(report_dir) / "caption" / "summary.json"
        try:
            self._load(cio.read_json(path))
        except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
            raise UserError(f"{path}: its test captions cannot be read ({exc.__class__.__name__}: "
                            f"{exc}); rerun `convattn reproduce`") from None
        self._pngs: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def _load(self, summary: dict) -> None:
        self.images_dir = Path(summary["dataset"]["path"]) / "images"
        self.dataset = summary["dataset"].get("name", "")
        self.models = [m for m in summary["models"] if m in next(iter(summary["captions"].values()), {})]
        names = list(summary["captions"])
        if not names:
            raise ValueError("no test images in \"captions\"")
        entries = [summary["captions"][n] for n in names]
        refs = [[r.split() for r in e["references"]] for e in entries]
        scores = {}
        for model in self.models:
            hyps = [e[model].split() for e in entries]
            scores[model] = {"bleu4": metrics.bleu4_per_image(refs, hyps),
                             "cider": metrics.cider_per_image(refs, hyps)}
        self.rows = [{"name": n, "filename": e["filename"], "references": e["references"],
                      "captions": {m: {"text": e[m], "bleu4": scores[m]["bleu4"][i],
                                       "cider": scores[m]["cider"][i]} for m in self.models}}
                     for i, (n, e) in enumerate(zip(names, entries))]
        self.by_name = {r["name"]: r for r in self.rows}

    def info(self) -> dict:
        means = {m: {k: float(np.mean([r["captions"][m][k] for r in self.rows])) for k in ("bleu4", "cider")}
                 for m in self.models}
        return {"dataset": self.dataset, "images": len(self.rows),
                "models": [{"name": m, "label": NAMES.get(m, m), "mean": means[m]} for m in self.models],
                "rows": self.rows}

    def png(self, name: str, size: int | None = None) -> bytes:
        """The test image `name` as PNG bytes, its longer side shrunk to `size` if larger.
        KeyError: not a test image; FileNotFoundError / ValueError: the file is gone or broken."""
        row = self.by_name[name]
        key = (name, size)
        with self._lock:
            if key in self._pngs:
                self._pngs.move_to_end(key)
                return self._pngs[key]
        path = self.images_dir / row["filename"]
        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
                if size and max(img.size) > size:
                    img.thumbnail((size, size), Image.BICUBIC)
                buffer = io.BytesIO()
                img.save(buffer, format="PNG")
        except (UnidentifiedImageError, OSError) as exc:
            if isinstance(exc, FileNotFoundError):
                raise FileNotFoundError(f"{path}: the test image is not there any more; the report "
                                        "was made from a dataset that has moved") from None
            raise ValueError(f"{path}: not an image Pillow can read ({exc.__class__.__name__})") from None
        data = buffer.getvalue()
        with self._lock:
            self._pngs[key] = data
            while len(self._pngs) > CACHE_IMAGES:
                self._pngs.popitem(last=False)
        return data

