"""The web app: one page (Jinja2 template, local CSS/JS) and a small JSON API.

    GET  /                          the page: caption an image, explore the test set, the report
    GET  /api/models                the models offered
    POST /api/caption               multipart: image (file), model (id), beam (1 = greedy, 2-10;
                                    unset: the model's run's decoding, as GET /api/models says)
    POST /api/preview               multipart: image -> PNG, for formats browsers cannot show (TIFF)
    GET  /api/testset               one page of a dataset's test images with references,
                                    captions and per-image bleu4 / CIDEr-D (?dataset=, sort=,
                                    reverse=, offset=, limit=; "datasets" lists the choices)
    GET  /api/testset/{name}/image  a test image as PNG (?dataset=; ?size=N: longer side at most N)
    GET  /report                    the run's report.html, as it is
    GET  /static/...                the page's CSS and JavaScript

Every error is JSON {"detail": "<a sentence>"} with a 4xx status (5xx only for a bug, and
still without a traceback); the traceback goes to the server's log, once. Every route is
behind guard.Guard (Host and Origin checks, a streaming body limit), and no response names
a folder of this machine. Uploads are decoded in worker processes (workers.DecodePool), each
within a budget of CPU time and memory, inside the --parallel slot of its request.
"""

from __future__ import annotations

import io
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

import convattn
from convattn.serve.catalog import NO_REPORT, find_stages
from convattn.serve.guard import Guard, Hosts
from convattn.serve.images import MAX_BYTES, BadImage, Fit, megabytes
from convattn.serve.models import ModelStore
from convattn.serve.testset import PAGE, TestSet, report_testsets
from convattn.serve.uploads import Upload
from convattn.serve.workers import DecodePool

HERE = Path(__file__).parent
MAX_BEAM = 10
UPLOAD_PATHS = ("/api/caption", "/api/preview")
PREVIEW_SIDE = 1024


def create_app(store: ModelStore, report_dir: Path | None = None, hosts: Hosts | None = None,
               pool: DecodePool | None = None) -> FastAPI:
    """An app serving `store`'s models and, when `report_dir` holds a reproduce run, its
    test set and report; answering requests addressed to `hosts` (default: 127.0.0.1's
    names); decoding uploads in `pool` (default: one worker per slot of the store), which
    the app starts with it and closes when it stops."""
    report_dir = Path(report_dir) if report_dir is not None else None
    testsets = report_testsets(find_stages(report_dir)) if report_dir is not None else {}
    has_summary = bool(testsets)
    report_html = report_dir / "report.html" if report_dir is not None else None
    # the folder's name only: the page is no place for this machine's paths
    missing_report = (f"no report here: {'the folder ' + repr(report_dir.name) if report_dir else './report'} "
                      f"has no {'report.html' if has_summary else 'caption/summary.json'}; {NO_REPORT}")
    pool = pool if pool is not None else DecodePool(store.parallel)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        pool.warm()
        yield
        pool.close()

    # no Swagger/ReDoc pages: they load their scripts from a CDN, and this page works offline;
    # the schema itself stays at /openapi.json
    app = FastAPI(title="convattn serve", version=convattn.__version__, docs_url=None, redoc_url=None,
                  lifespan=lifespan)
    app.add_middleware(Guard, hosts=hosts or Hosts(), upload_paths=UPLOAD_PATHS)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    templates = Jinja2Templates(directory=HERE / "templates")

    @app.exception_handler(BadImage)
    async def bad_image(request: Request, exc: BadImage):
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError):
        return JSONResponse({"detail": "; ".join(describe(e) for e in exc.errors())}, status_code=422)

    @app.get("/", include_in_schema=False)
    def page(request: Request):
        return templates.TemplateResponse(request, "index.html", {
            "version": convattn.__version__, "models": store.info(), "max_beam": MAX_BEAM,
            "model_groups": runs_of_datasets(store.info()),
            "max_bytes": MAX_BYTES, "max_mb": megabytes(MAX_BYTES),
            "has_testset": bool(testsets), "has_report": bool(report_html and report_html.is_file()),
            "missing_report": missing_report, "device": str(store.device)})

    @app.get("/api/models")
    def models() -> list[dict]:
        return store.info()

    add_upload_routes(app, store, pool)
    add_testset_routes(app, testsets, missing_report)

    @app.get("/report", include_in_schema=False)
    def report():
        if not (report_html and report_html.is_file()):
            raise HTTPException(404, missing_report)
        return FileResponse(report_html, media_type="text/html")

    return app


def add_upload_routes(app: FastAPI, store: ModelStore, pool: DecodePool) -> None:
    """POST /api/caption and /api/preview: each upload decoded in `pool` inside a slot."""

    @app.post("/api/caption")
    def caption(image: Annotated[UploadFile, File(description="any image Pillow reads")],
                model: Annotated[str, Form()] = "m0",
                beam: Annotated[int | None, Form(ge=1, le=MAX_BEAM, description=(
                    "1: greedy; unset: the model's run's decoding (its 'beam' and 'decoding' "
                    "in GET /api/models)"))] = None) -> dict:
        if model not in store.models:
            raise HTTPException(404, f"no model {model[:100]!r}; GET /api/models lists them")
        return store.caption(model, upload_of(image, pool), beam)

    @app.post("/api/preview")
    def preview(image: Annotated[UploadFile, File(description="any image Pillow reads")]):
        # decoded in a slot: it counts in the --parallel bound, as a caption's decoding does
        picture = store.in_slot(upload_of(image, pool).decode, Fit(max_side=PREVIEW_SIDE)).image
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        return Response(buffer.getvalue(), media_type="image/png")


def add_testset_routes(app: FastAPI, testsets: dict[str, TestSet], missing_report: str) -> None:
    """GET /api/testset and /api/testset/{name}/image."""

    def testset_of(dataset: str | None) -> TestSet:
        if not testsets:
            raise HTTPException(404, missing_report)
        if dataset is None:
            return next(iter(testsets.values()))
        if dataset not in testsets:
            raise HTTPException(404, f"no test set of {dataset[:100]!r} here; this report has "
                                     + ", ".join(testsets))
        return testsets[dataset]

    @app.get("/api/testset")
    def explore(dataset: Annotated[str | None, Query(description="default: the first")] = None,
                sort: str = "file", reverse: bool = False,
                offset: Annotated[int, Query(ge=0)] = 0,
                limit: Annotated[int, Query(ge=1, le=500)] = PAGE) -> dict:
        testset = testset_of(dataset)
        try:
            return {"datasets": list(testsets), **testset.page(sort, reverse, offset, limit)}
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None

    @app.get("/api/testset/{name}/image")
    def test_image(name: str, dataset: str | None = None,
                   size: Annotated[int | None, Query(ge=16, le=2048)] = None):
        testset = testset_of(dataset)
        try:
            png = testset.png(name, size)
        except KeyError:
            raise HTTPException(404, f"{name[:100]!r} is not a test image of {testset.dataset} in this "
                                     "report") from None
        except (FileNotFoundError, ValueError) as exc:
            raise HTTPException(404, str(exc)) from None
        return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})


def runs_of_datasets(models: list[dict]) -> list[tuple[str | None, list[dict]]]:
    """The models, in their order, cut where the dataset changes: the page's option groups
    (a report's models come grouped by dataset, catalog.ranked)."""
    groups: list = []
    for m in models:
        if groups and groups[-1][0] == m["dataset"]:
            groups[-1][1].append(m)
        else:
            groups.append((m["dataset"], [m]))
    return groups


def upload_of(upload: UploadFile, pool: DecodePool) -> Upload:
    """The uploaded file, to be read and decoded inside a slot; named as the client named it
    (its last part only, at most 100 characters: messages repeat it)."""
    name = (upload.filename or "").replace("\\", "/").rsplit("/", 1)[-1][:100]
    return Upload(upload.file, f"'{name}'" if name else "the upload", pool)


def describe(error: dict) -> str:
    """A pydantic validation error as a sentence: 'beam: Input should be ...'."""
    where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path"))
    if error.get("type") == "missing":
        return f"{where}: missing (send it as a form field)" if where != "image" else \
            "image: no file was sent (a multipart form field named 'image')"
    return f"{where}: {error.get('msg', 'invalid')}"
