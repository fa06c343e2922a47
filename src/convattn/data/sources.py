"""Where a dataset's files come from, by the shape of `--from`.

    archive   a .zip, .tar, .tar.gz or .tgz, a path or a URL (a URL is downloaded first,
              resumably, into DEST/.download/)
    gitdir    a git directory (bare or not) holding the pinned commit
    folder    a local folder holding the files (searched recursively)
    base      any other URL: each file is BASE + its name (a repository's raw URLs, a mirror)

Each source yields (file name, bytes) for the names asked for; checking them is the caller's.
"""

from __future__ import annotations

import subprocess
import tarfile
import threading
import urllib.parse
import zipfile
from pathlib import Path, PurePosixPath
from typing import Iterable, Iterator

from convattn.common.errors import UserError
from convattn.data import transfer

ARCHIVES = (".zip", ".tar", ".tar.gz", ".tgz")


def kind_of(source: str) -> str:
    """archive, gitdir, folder or base (see the module's docstring)."""
    path = urllib.parse.urlsplit(source).path if transfer.is_url(source) else source
    if path.lower().endswith(ARCHIVES):
        return "archive"
    if transfer.is_url(source):
        return "base"
    folder = Path(source)
    if not folder.exists():
        raise UserError(f"--from {source}: no such file or folder; pass an archive, a git directory, "
                        "a folder or a URL")
    if (folder / "HEAD").is_file() and (folder / "objects").is_dir():
        return "gitdir"
    if (folder / ".git").is_dir():
        return "gitdir"
    if folder.is_dir():
        return "folder"
    raise UserError(f"--from {source}: not a .zip or .tar archive, a folder or a git directory")


def local_archive(source: str, workdir: Path, fix: str, quiet: bool = False) -> tuple[Path, bool]:
    """(the archive on disk, whether it was downloaded here): a URL is fetched into
    `workdir`, continuing an interrupted download; a path is used where it is."""
    if not transfer.is_url(source) or source.startswith("file:"):
        path = Path(urllib.parse.urlsplit(source).path if source.startswith("file:") else source)
        if not path.is_file():
            raise UserError(f"--from {source}: no such file; pass the archive's path or URL")
        return path, False
    name = PurePosixPath(urllib.parse.urlsplit(source).path).name
    target = workdir / name
    if target.is_file():  # downloaded whole by an earlier run; the caller checks it
        return target, True
    part = transfer.fetch_to(source, workdir / f"{name}.part", fix, desc=name, quiet=quiet)
    part.replace(target)
    return target, True


def archive_files(path: Path, wanted: Iterable[str]) -> Iterator[tuple[str, bytes]]:
    """(base name, bytes) of every file in a zip or tar archive whose base name is wanted."""
    wanted = set(wanted)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                for info in archive.infolist():
                    name = PurePosixPath(info.filename).name
                    if not info.is_dir() and name in wanted:
                        yield name, archive.read(info)
            return
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                name = PurePosixPath(member.name).name
                if member.isfile() and name in wanted:
                    yield name, archive.extractfile(member).read()
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise transfer.Mismatch(f"{path}: not a readable zip or tar archive ({exc}); pass --from "
                                "another copy") from None


def archive_names(path: Path) -> list[str]:
    """Every member's path in a zip or tar archive."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return archive.namelist()
        with tarfile.open(path, "r:*") as archive:
            return archive.getnames()
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise transfer.Mismatch(f"{path}: not a readable zip or tar archive ({exc}); pass --from "
                                "another copy") from None


def folder_files(folder: Path, wanted: Iterable[str]) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of the wanted files anywhere under `folder`, the first found of each name."""
    wanted = set(wanted)
    for path in sorted(folder.rglob("*")):
        if path.name in wanted and path.is_file():
            wanted.discard(path.name)
            yield path.name, path.read_bytes()


def _git(gitdir: Path, *args: str, input_: bytes | None = None) -> bytes:
    try:
        return subprocess.run(["git", "-C", str(gitdir), *args], input=input_, check=True,
                              capture_output=True).stdout
    except FileNotFoundError:
        raise UserError("git not found; install git or pass --from a URL, a folder or an archive") from None
    except subprocess.CalledProcessError as exc:
        raise UserError(f"--from {gitdir}: git {args[0]} failed ({exc.stderr.decode().strip()[:200]}); "
                        "pass a git directory holding the pinned commit") from None


def git_file(gitdir: Path, commit: str, path: str) -> bytes:
    """One file of `commit` in a git directory."""
    return _git(gitdir, "show", f"{commit}:{path}")


def git_files(gitdir: Path, commit: str, folder: str, wanted: Iterable[str]) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of the wanted files in `folder` of `commit`, read with one cat-file."""
    wanted = set(wanted)
    listing = _git(gitdir, "ls-tree", "-r", commit, folder.rstrip("/") + "/").decode().splitlines()
    blobs = {}
    for line in listing:
        meta, path = line.split("\t", 1)
        name = PurePosixPath(path).name
        if name in wanted and meta.split()[1] == "blob":
            blobs[name] = meta.split()[2]
    if blobs:
        yield from _cat_blobs(gitdir, blobs)


def _cat_blobs(gitdir: Path, blobs: dict[str, str]) -> Iterator[tuple[str, bytes]]:
    """Stream blobs out of one `git cat-file --batch`; ids are fed from a thread so that
    neither pipe fills while the other waits."""
    proc = subprocess.Popen(["git", "-C", str(gitdir), "cat-file", "--batch"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    feeder = threading.Thread(target=_feed, args=(proc.stdin, list(blobs.values())), daemon=True)
    feeder.start()
    try:
        for name in blobs:
            header = proc.stdout.readline().split()
            if len(header) != 3:
                raise UserError(f"--from {gitdir}: git cat-file gave no blob for {name}; "
                                "pass a git directory holding the pinned commit")
            data = proc.stdout.read(int(header[2]))
            proc.stdout.read(1)  # the newline after each blob
            yield name, data
    finally:
        proc.stdout.close()
        proc.kill()
        proc.wait()


def _feed(stdin, ids: list[str]) -> None:
    try:
        for blob in ids:
            stdin.write(blob.encode() + b"\n")
        stdin.close()
    except (BrokenPipeError, ValueError):
        pass
