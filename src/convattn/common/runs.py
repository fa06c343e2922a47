"""The run store: one checkpoint per training run, and one policy for reusing it.

A run (one learning rate of a classify sweep, one (decoder, seed) of caption) keeps one
checkpoint file, rewritten atomically after every epoch. It is one plain dict:

    format   "convattn.run/1"
    key      what the run computes: config.run_key() plus the run's own settings and the
             data's fingerprint; a stored run is used only when its key matches
    status   "running" (after an unfinished epoch), "finished", or "diverged"
    epoch    completed epochs
    history  the run's per-epoch records
    model, optimizer, scheduler   state dicts (scheduler None when there is none)
    rng      CPU and CUDA random states, so a resumed run draws what it would have drawn
    result   finished runs only: the numbers the command reports
    ...      anything else the command stores (extra=)

Every command reads a stored run through `load_state` with one policy, set by the same
flags everywhere (`add_policy_flags`):

    resume (default)  finished runs are reused; unfinished ones continue from their last
                      completed epoch, ending with the numbers of an uninterrupted run
    reuse             finished runs are reused; unfinished ones start over
    fresh             every run is trained again

A stored run with another key is never used: it is trained again, and the log says which
settings changed.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np
import torch

from convattn.common import io
from convattn.common.errors import UserError
from convattn.common.progress import log
from convattn.common.runtime import environment

FORMAT = "convattn.run/1"
POLICIES = ("resume", "reuse", "fresh")
FINISHED = ("finished", "diverged")


def add_policy_flags(parser: argparse.ArgumentParser) -> None:
    """--runs POLICY, with --resume and --fresh as its short forms."""
    group = parser.add_argument_group("stored runs").add_mutually_exclusive_group()
    group.add_argument("--runs", choices=POLICIES, default="resume", dest="runs",
                       help="stored runs in --out: resume (default) reuses finished runs and "
                            "continues unfinished ones from their last epoch; reuse restarts "
                            "unfinished ones; fresh trains everything again")
    group.add_argument("--resume", action="store_const", const="resume", dest="runs",
                       help="same as --runs resume (the default)")
    group.add_argument("--fresh", action="store_const", const="fresh", dest="runs",
                       help="same as --runs fresh")


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise UserError(f"--runs {policy}: expected one of {', '.join(POLICIES)}")
    return policy


# ------------------------------------------------------------------------ random state

def rng_state() -> dict:
    """Python, NumPy, torch CPU and (when present) every CUDA device's random state."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    # plain lists: checkpoints are loaded with weights_only=True, which refuses numpy arrays
    state = {"python": random.getstate(), "numpy": [name, keys.tolist(), pos, has_gauss, gauss],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_python_state(state["python"]))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _python_state(s):
    # torch.save turns the tuple into lists; random.setstate wants tuples back
    return (s[0], tuple(s[1]), s[2])


# ------------------------------------------------------------------------ save / load

def save_state(path: Path, *, key: dict, epoch: int, status: str, history: dict, model,
               optimizer=None, scheduler=None, result: dict | None = None, **extra) -> dict:
    """Write a run's checkpoint atomically (see the module's doc); returns the dict."""
    state = {"format": FORMAT, "key": key, "status": status, "epoch": epoch,
             "history": history, "model": model.state_dict(),
             "optimizer": optimizer.state_dict() if optimizer is not None else None,
             "scheduler": scheduler.state_dict() if scheduler is not None else None,
             "rng": rng_state(), "result": result, **extra}
    io.save_checkpoint(path, state)
    return state


def restore(state: dict, model, optimizer=None, scheduler=None) -> None:
    """Put a stored run's model, optimizer, scheduler and random state back."""
    model.load_state_dict(state["model"])
    if optimizer is not None and state.get("optimizer") is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])


def key_difference(old: dict, new: dict) -> str:
    """'epochs 6 -> 4, lr 0.001 -> 0.01': what changed between two run keys."""
    names = list(new) + [k for k in old if k not in new]
    return ", ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in names
                     if old.get(k) != new.get(k)) or "format"


def load_state(path: Path, key: dict, policy: str, label: str, device="cpu") -> dict | None:
    """The stored run at `path` when the policy says to use it, else None (train afresh).

    A finished run is returned for reuse; an unfinished one only under `resume`. Every
    decision is logged under `label` (e.g. "lr 0.01", "attention seed 42")."""
    check_policy(policy)
    path = Path(path)
    if policy == "fresh" or not path.is_file():
        return None
    state = io.load_checkpoint(path, map_location=device)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        log(f"{label}: {path} is not a run checkpoint of this version; training again")
        return None
    if state.get("key") != key:
        log(f"{label}: {path} was trained differently ({key_difference(state.get('key') or {}, key)}); "
            "training again")
        return None
    if state["status"] in FINISHED:
        log(f"{label}: reusing the finished run in {path}")
        return state
    if policy == "resume":
        log(f"{label}: resuming {path} after epoch {state['epoch']}")
        return state
    log(f"{label}: {path} is unfinished (epoch {state['epoch']}); training again "
        "(--resume continues it)")
    return None


# ------------------------------------------------------------------------ summaries

def summary_base(command: str, config, data: dict, device, timing: dict) -> dict:
    """What every summary.json records, under the same keys in every command:
    command, preset, config, data (its fingerprint and sizes), device, timing
    (seconds), environment (versions, threads)."""
    return {"command": command, "preset": getattr(config, "preset", None),
            "config": config.to_dict(), "data": data, "device": str(device),
            "timing": timing, "environment": environment()}
