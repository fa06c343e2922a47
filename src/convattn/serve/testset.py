"""The test sets of a `reproduce` run, as the page's explorer shows them: one per dataset
whose caption stages ran (Sydney-Captions: caption and caption-best; RSICD: rsicd and
rsicd-best; catalog.find_stages), each with the captions of every stage run on it.

Read from each stage's summary.json: each test image's references and each decoder's
caption (first seed, as the report shows them); a column is one (stage, decoder), named
"<stage>/<decoder>". Scored here per image, once per process: `bleu4` is the study's metric
(nltk sentence_bleu, uniform 1- to 4-gram weights, no smoothing; `caption.metrics.
bleu4_per_image`), CIDEr-D is pycocoevalcap's with the idf of these test references, as in
the report. Sorting and paging are done here, so the page fetches one page of rows (RSICD's
test split is 1,093 images). Images are served as PNG (browsers cannot show Sydney's TIFFs),
optionally shrunk for thumbnails, and kept in a small cache per test set.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from convattn.caption import metrics
from convattn.common.errors import UserError
from convattn.common.progress import log
from convattn.serve.catalog import NAMES, Stage

CACHE_IMAGES = 256  # PNGs kept in memory per test set: a few pages of thumbnails
PAGE = 50           # rows per page unless asked otherwise
METRICS = {"bleu4": "bleu4", "cider": "CIDEr-D"}


def report_testsets(stages: list[Stage]) -> dict[str, TestSet]:
    """Dataset name -> its test set, from the stages that ran on it (in stage order)."""
    by_dataset: dict = {}
    for stage in stages:
        by_dataset.setdefault(stage.dataset, []).append(stage)
    return {name: TestSet(name, group) for name, group in by_dataset.items()}


class TestSet:
    def __init__(self, dataset: str, stages: list[Stage]):
        self.dataset = dataset
        self.images_dir = stages[0].data_dir / "images"
        self.columns, self.rows = [], []
        for stage in stages:
            path = stage.folder / "summary.json"
            try:
                self._add(stage)
            except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
                raise UserError(f"{path}: its test captions cannot be read ({exc.__class__.__name__}: "
                                f"{exc}); rerun `convattn reproduce`") from None
        self.by_name = {r["name"]: r for r in self.rows}
        self._pngs: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def _add(self, stage: Stage) -> None:
        """Stage's test captions as columns; the first stage also gives the rows."""
        captions = stage.summary["captions"]
        names = list(captions)
        if not names:
            raise ValueError("no test images in \"captions\"")
        if not self.rows:
            self.rows = [{"name": n, "filename": captions[n]["filename"], "references": captions[n]["references"],
                          "captions": {}} for n in names]
        elif sorted(names) != sorted(r["name"] for r in self.rows):
            log(f"{stage.folder / 'summary.json'}: its test images are not those of the other "
                f"{self.dataset} stage; its captions are left out of the test-set browser")
            return
        refs = [[r.split() for r in row["references"]] for row in self.rows]
        first = captions[names[0]]
        for model in (m for m in stage.summary["models"] if m in first):
            name = f"{stage.name}/{model}"
            hyps = [captions[row["name"]][model] for row in self.rows]
            bleu4 = metrics.bleu4_per_image(refs, [h.split() for h in hyps])
            cider = metrics.cider_per_image(refs, [h.split() for h in hyps])
            for row, text, b, c in zip(self.rows, hyps, bleu4, cider):
                row["captions"][name] = {"text": text, "bleu4": float(b), "cider": float(c)}
            self.columns.append({"name": name, "stage": stage.name, "model": model, "recipe": stage.recipe,
                                 "label": f"{NAMES.get(model, model)} ({stage.recipe})",
                                 "mean": {k: float(np.mean([r["captions"][name][k] for r in self.rows]))
                                          for k in METRICS}})

    def sorts(self) -> list[dict]:
        """The orders a page can ask for: file order, each column's bleu4 and CIDEr-D (worst
        first), and per stage with both decoders attention's bleu4 minus no attention's."""
        out = [{"value": "file", "label": "file order"}]
        for c in self.columns:
            out += [{"value": f"{k}:{c['name']}", "label": f"{label}, {c['label']} (worst first)"}
                    for k, label in METRICS.items()]
        for stage in dict.fromkeys(c["stage"] for c in self.columns):
            if {f"{stage}/attention", f"{stage}/no_attention"} <= {c["name"] for c in self.columns}:
                out.append({"value": f"gain:{stage}", "label": f"bleu4, attention minus no attention "
                                                               f"({stage}; attention's losses first)"})
        return out

    def key(self, sort: str):
        """A sort value (see `sorts`) -> a function of a row, or None for file order.
        ValueError: not one of them."""
        if sort not in {s["value"] for s in self.sorts()}:
            raise ValueError(f"sort {sort[:100]!r}: expected one of " + ", ".join(s["value"] for s in self.sorts()))
        kind, _, name = sort.partition(":")
        if kind == "file":
            return None
        if kind == "gain":
            return lambda r: r["captions"][f"{name}/attention"]["bleu4"] - r["captions"][f"{name}/no_attention"]["bleu4"]
        return lambda r: r["captions"][name][kind]

    def page(self, sort: str = "file", reverse: bool = False, offset: int = 0, limit: int = PAGE) -> dict:
        """One page of rows in the `sort` order (ties in file order), with what the page needs
        to draw its controls. ValueError: an unknown sort."""
        key = self.key(sort)
        order = list(range(len(self.rows)))
        if key is not None:
            order.sort(key=lambda i: key(self.rows[i]))  # stable: ties stay in file order
        if reverse:
            order.reverse()
        return {"dataset": self.dataset, "images": len(self.rows), "models": self.columns,
                "sorts": self.sorts(), "sort": sort, "reverse": reverse, "offset": offset, "limit": limit,
                "rows": [self.rows[i] for i in order[offset:offset + limit]]}

    def png(self, name: str, size: int | None = None) -> bytes:
        """The test image `name` as PNG bytes, its longer side shrunk to `size` if larger.
        KeyError: not a test image; FileNotFoundError / ValueError: the file is gone or broken."""
        row = self.by_name[name]
        key = (name, size)
        with self._lock:
            if key in self._pngs:
                self._pngs.move_to_end(key)
                return self._pngs[key]
        data = png_bytes(self.images_dir / row["filename"], size)
        with self._lock:
            self._pngs[key] = data
            while len(self._pngs) > CACHE_IMAGES:
                self._pngs.popitem(last=False)
        return data


def png_bytes(path: Path, size: int | None) -> bytes:
    """An image file as PNG bytes, its longer side shrunk to `size` if larger."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            if size and max(img.size) > size:
                img.thumbnail((size, size), Image.BICUBIC)
            buffer = io.BytesIO()
            img.save(buffer, format="PNG")
    except (UnidentifiedImageError, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise FileNotFoundError(f"{path.name}: the test image is not there any more; the report "
                                    "was made from a dataset that has moved") from None
        raise ValueError(f"{path.name}: not an image Pillow can read ({exc.__class__.__name__})") from None
    return buffer.getvalue()
