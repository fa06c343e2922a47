"""RSICD's images into DEST/images, each checked against the manifest before it is kept.

Images already there are checked first and kept when they verify; only the others are
fetched, from a base URL (one request per image, `jobs` at a time), an archive, a git
directory or a folder (sources.py). An image from the official RSICD_images.zip whose zip
verified by its Git LFS SHA-256 is kept even where its bytes differ from the manifest's copy;
its digest is then recorded in DEST/.download/accepted.sha256 so that a rerun accepts it.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from convattn.common.errors import UserError
from convattn.common.progress import log, progress
from convattn.data import sources, transfer

ACCEPTED = "accepted.sha256"


class Keeper:
    """Checks each arriving image against the manifest; keeps those that verify."""

    def __init__(self, images: Path, manifest: dict[str, tuple[str, int]], accepted: dict[str, str]):
        self.images, self.manifest, self.accepted = images, manifest, accepted
        self.kept: set[str] = set()
        self.bad: list[str] = []

    def keep(self, name: str, data: bytes, where: str, trusted: bool = False) -> None:
        digest = hashlib.sha256(data).hexdigest()
        expected = self.manifest[name][0]
        if digest != expected and not trusted:
            self.bad.append(f"{name} from {where}: SHA-256 {digest[:12]}..., expected {expected[:12]}...")
            return
        if digest != expected:
            self.accepted[name] = digest
        transfer.place(self.images / name, data)
        self.kept.add(name)


def fetch_images(images: Path, work: Path, source: str, pins, *, jobs: int, quiet: bool, fix: str) -> None:
    """Make `images` hold every image of `pins.manifest`, verified; a UserError otherwise."""
    accepted = read_accepted(work)
    missing = unverified(images, pins.manifest, accepted, quiet)
    if not missing:
        return
    transfer.check_space(images, sum(pins.manifest[n][1] for n in missing), f"{len(missing):,} RSICD images")
    keeper = Keeper(images, pins.manifest, accepted)
    kind = sources.kind_of(source)
    try:
        if kind == "base":
            _from_base(keeper, source, missing, jobs, quiet, fix)
        elif kind == "archive":
            _from_archive(keeper, source, work, missing, pins, quiet, fix)
        else:
            files = (sources.git_files(Path(source), pins.commit, pins.folder, missing) if kind == "gitdir"
                     else sources.folder_files(Path(source), missing))
            for name, data in progress(files, total=len(missing), desc="RSICD images", unit="img", quiet=quiet):
                keeper.keep(name, data, source)
    finally:
        if keeper.accepted:
            transfer.place(work / ACCEPTED, "".join(f"{d}  {n}\n" for n, d in sorted(keeper.accepted.items())).encode())
    _report(keeper, missing, source)


def unverified(images: Path, manifest: dict[str, tuple[str, int]], accepted: dict[str, str],
               quiet: bool) -> set[str]:
    """The manifest's images not in `images` with the expected (or an accepted) digest."""
    missing = set(manifest)
    present = [p for p in images.iterdir() if p.name in manifest] if images.is_dir() else []
    for path in progress(present, desc="checking RSICD images", unit="img", quiet=quiet):
        digest = transfer.sha256_file(path)
        if digest == manifest[path.name][0] or digest == accepted.get(path.name):
            missing.discard(path.name)
    if present:
        log(f"{images}: {len(manifest) - len(missing):,} of {len(manifest):,} images already there and verified")
    return missing


def read_accepted(work: Path) -> dict[str, str]:
    path = work / ACCEPTED
    if not path.is_file():
        return {}
    return {name: digest for digest, name in (line.split("  ", 1) for line in path.read_text().splitlines() if line)}


def _from_base(keeper: Keeper, base: str, missing: set[str], jobs: int, quiet: bool, fix: str) -> None:
    """One request per image, `jobs` at a time; the first network failure stops the rest."""
    base = base.rstrip("/") + "/"
    pool = ThreadPoolExecutor(max(1, jobs))
    try:
        futures = {pool.submit(transfer.fetch_bytes, base + name, fix): name for name in sorted(missing)}
        with progress(total=len(futures), desc="RSICD images", unit="img", quiet=quiet) as bar:
            for future in as_completed(futures):
                keeper.keep(futures[future], future.result(), base + futures[future])
                bar.update()
    except UserError as exc:
        raise UserError(f"{exc} ({len(keeper.kept):,} of {len(missing):,} images fetched this time, "
                        f"verified and kept in {keeper.images})") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _from_archive(keeper: Keeper, source: str, work: Path, missing: set[str], pins, quiet: bool, fix: str) -> None:
    path, downloaded = sources.local_archive(source, work, fix, quiet)
    official = transfer.sha256_file(path) == pins.official_zip_sha256
    if official:
        log(f"{path}: the official RSICD_images.zip (its Git LFS object's SHA-256 verified)")
    files = sources.archive_files(path, missing)
    try:
        for name, data in progress(files, total=len(missing), desc="RSICD images", unit="img", quiet=quiet):
            keeper.keep(name, data, path.name, trusted=official)
    except transfer.Mismatch as exc:
        raise transfer.Mismatch(f"{exc}{_removed(path, downloaded)}") from None
    if downloaded:  # read whole: its images are kept or reported; a rerun downloads it anew
        path.unlink()
    if keeper.accepted:
        log(f"{path.name}: {len(keeper.accepted):,} images differ from the manifest's copy; kept on the zip's digest")


def _removed(path: Path, downloaded: bool) -> str:
    if not downloaded:
        return ""
    path.unlink()
    return f" (the downloaded {path.name} was removed; a rerun downloads it again)"


def _report(keeper: Keeper, missing: set[str], source: str) -> None:
    kept = f"{len(keeper.kept):,} verified images kept in {keeper.images}"
    if keeper.bad:
        raise transfer.Mismatch(f"{len(keeper.bad):,} images failed their SHA-256 check (first: {keeper.bad[0]}); "
                        f"nothing unverified was kept, {kept}; rerun, or pass --from another copy")
    lacking = sorted(missing - keeper.kept)
    if lacking:
        raise transfer.Mismatch(f"--from {source}: {len(lacking):,} of RSICD's images are not there (first: "
                        f"{lacking[0]}); {kept}; pass --from a complete copy")
