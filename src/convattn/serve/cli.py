"""`convattn serve`: the caption models, the test set and the report of a run, in a browser.

With no flags it serves the last `reproduce` run in ./report. The models are loaded before
the server starts, so a bad --model or --report is one line and exit 2, not a dead page.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import uvicorn

from convattn.common.errors import UserError
from convattn.common.progress import log
from convattn.common.runtime import choose_device
from convattn.serve.app import create_app
from convattn.serve.catalog import NO_REPORT, given_models, report_models
from convattn.serve.guard import Hosts
from convattn.serve.models import ModelStore

DEFAULT_REPORT = "report"
# captions computed at once per CPU core, one torch thread each. bench/serve_load.py on 2
# cores, 500x500 images: 2 at once 8.9 captions/s, 8 at once 7.7, 1 at once 3.4 while the
# machine was quiet; under heavy load from other jobs, 8 at once won only by taking a
# bigger share of the CPU from them
PARALLEL_PER_CORE = 1
# connections open at once; more are answered 503 by uvicorn. Each may hold an upload of up
# to 24 MB spooled to disk while it waits for a slot: 64 bound that to 1.5 GB
MAX_CONNECTIONS = 64


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve",
        description="Serve a web page (offline: no CDN) to caption uploaded images with the "
                    "trained decoders (greedy or beam search, top beams, attention maps per word, a "
                    "warning when an image is unlike every training image), browse each dataset's "
                    "test set with its references, captions and per-image scores, and read "
                    "the study's report. Without flags: the last `reproduce` run in ./report.")
    parser.add_argument("--model", metavar="PATH", action="extend", nargs="+", default=None,
                        help="a model.pt to offer (repeatable; default: the models of --report)")
    parser.add_argument("--report", metavar="DIR", default=None,
                        help=f"a `convattn reproduce --out DIR` folder: every decoder of its caption stages "
                             "(caption, caption-best, rsicd, rsicd-best), grouped by dataset, best "
                             f"validation score first, and their test sets (default: {DEFAULT_REPORT})")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    parser.add_argument("--allow-host", metavar="NAME", action="append", default=[],
                        help="a name the server may also be reached by (repeatable): requests whose "
                             "Host header is neither --host (with localhost for 127.0.0.1) nor one of "
                             "these are refused, so that no other site's page can drive the server "
                             "through a DNS name pointing here")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads per caption (default: 1; requests run in parallel)")
    parser.add_argument("--parallel", type=int, default=None,
                        help="uploads decoded and captioned at once, each on --threads threads "
                             "(default: the number of CPU cores); more wait their turn")
    parser.set_defaults(func=_serve)


def build(models: list | None, report: str | None, device_name: str = "auto",
          parallel: int | None = None, hosts: Hosts | None = None):
    """-> (FastAPI app, the model store): what `serve` runs, without the server."""
    device = choose_device(device_name)
    report_dir = Path(report or DEFAULT_REPORT)
    if report is not None and not report_dir.is_dir():
        raise UserError(f"--report {report_dir}: no such folder; {NO_REPORT}")
    if models:
        entries = given_models(models)
    elif not report_dir.is_dir():
        raise UserError(f"no ./{DEFAULT_REPORT} folder with a reproduce run here; {NO_REPORT}")
    else:
        entries = report_models(report_dir)
    store = ModelStore(entries, device, parallel or PARALLEL_PER_CORE * (os.cpu_count() or 1))
    return create_app(store, report_dir if report_dir.is_dir() else None, hosts), store


def _serve(args) -> int:
    if args.threads < 1:
        raise UserError(f"--threads {args.threads}: expected 1 or more")
    if args.parallel is not None and args.parallel < 1:
        raise UserError(f"--parallel {args.parallel}: expected 1 or more")
    if not 0 < args.port < 65536:
        raise UserError(f"--port {args.port}: expected 1-65535")
    torch.set_num_threads(args.threads)
    app, store = build(args.model, args.report, args.device, args.parallel, Hosts(args.host, args.allow_host))
    for m in store.models.values():
        log(f"model {m.id}: {m.label} ({m.path})")
    for reason in dict.fromkeys(m.novelty.reason for m in store.models.values() if m.novelty.reason):
        log(reason)  # once per cause, not once per model
    log(f"convattn serve: http://{args.host}:{args.port}/ (Ctrl-C to stop)")
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning", limit_concurrency=MAX_CONNECTIONS)
    except SystemExit as exc:  # uvicorn exits 1 when it cannot bind
        raise UserError(f"--host {args.host} --port {args.port}: cannot listen there (in use, or "
                        "not an address of this machine); pick another --port") from exc
    finally:
        store.close()
    return 0
