"""The app's run folders on disk: always under the runs root, written atomically, expired by age and total size.

A visitor's session hash is chosen by the client, so it never becomes a path as sent: `jobs.session_id` hashes
it, and every path is resolved and checked against the runs root before anything is written. A run is written
into `<name>.partial` and renamed once complete (its zip beside it), so a full disk or a crash never leaves a
folder that looks like a finished run. Before each new run, runs older than ANATOMY_RUNS_MAX_AGE_H hours are
deleted, then the oldest until all runs fit in ANATOMY_RUNS_MAX_GB (a Space's disk is 50 GB, shared with the
Hub cache, so the defaults keep runs to a day and 5 GB).
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from anatomy.errors import AnatomyError
from anatomy.report import RunFolder

RUNS_ROOT = Path(os.environ.get("ANATOMY_RUNS_ROOT", Path(tempfile.gettempdir()) / "anatomy-app-runs"))
PARTIAL = ".partial"
WRITING_GRACE_S = 3600  # a .partial younger than this may still be written by a running job
NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
DEFAULT_MAX_AGE_H, DEFAULT_MAX_GB = 24.0, 5.0
_SWEEPING = threading.Lock()


def limits() -> tuple[float, float]:
    """(max age in seconds, max total bytes) of the runs, read at call time so a deployer or a test can set them."""
    try:
        hours = float(os.environ.get("ANATOMY_RUNS_MAX_AGE_H", DEFAULT_MAX_AGE_H))
        gib = float(os.environ.get("ANATOMY_RUNS_MAX_GB", DEFAULT_MAX_GB))
    except ValueError as err:
        raise AnatomyError(f"ANATOMY_RUNS_MAX_AGE_H and ANATOMY_RUNS_MAX_GB must be numbers ({err}).") from None
    return hours * 3600, gib * 2**30


def inside(path: Path) -> Path:
    """`path` resolved, refused unless it lies under the runs root (whatever links or `..` it holds)."""
    root = RUNS_ROOT.resolve()
    resolved = path.resolve()
    if resolved != root and not resolved.is_relative_to(root):
        raise AnatomyError("That run folder is outside this app's runs: run the experiment again.")
    return resolved


def _size(path: Path) -> int:
    if path.is_dir() and not path.is_symlink():
        return sum(p.lstat().st_size for p in path.rglob("*"))
    return path.lstat().st_size


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _runs_on_disk() -> list[tuple[float, int, list[Path]]]:
    """(last modified, bytes, paths) of each run: its folder and its zip together, oldest first."""
    runs: dict[Path, list[Path]] = {}
    for session in RUNS_ROOT.iterdir():
        try:
            entries = list(session.iterdir()) if session.is_dir() and not session.is_symlink() else [session]
        except OSError:
            continue  # removed meanwhile
        for entry in entries:
            runs.setdefault(entry.with_name(entry.name.removesuffix(".zip")), []).append(entry)
    found = []
    for paths in runs.values():
        try:
            found.append((max(p.lstat().st_mtime for p in paths), sum(_size(p) for p in paths), paths))
        except OSError:
            continue  # deleted meanwhile by another job's sweep
    return sorted(found, key=lambda run: run[0])


def sweep(now: float | None = None) -> list[Path]:
    """Delete expired runs, then the oldest until the rest fit the quota; returns what was deleted.

    A run is a folder of a session and its zip; a `.partial` still being written is left alone, and
    session folders left empty are removed.
    """
    max_age, max_bytes = limits()
    now = time.time() if now is None else now
    if not RUNS_ROOT.is_dir():
        return []
    with _SWEEPING:  # concurrent jobs' sweeps would count and delete the same runs twice
        return _sweep(now, max_age, max_bytes)


def _sweep(now: float, max_age: float, max_bytes: float) -> list[Path]:
    found = _runs_on_disk()
    total = sum(size for _, size, _ in found)
    deleted = []
    for mtime, size, paths in found:
        writing = any(p.name.endswith(PARTIAL) for p in paths) and now - mtime < WRITING_GRACE_S
        if writing or (now - mtime <= max_age and total <= max_bytes):
            continue
        for path in paths:
            _remove(path)
        total -= size
        deleted += paths
    for session in RUNS_ROOT.iterdir():
        try:
            session.rmdir()  # only if empty; a run another job just started keeps it
        except OSError:
            pass
    return deleted


def disk_full_error(err: OSError, what: str) -> AnatomyError:
    return AnatomyError(f"The server's disk is full ({os.strerror(err.errno)}) while writing {what}: nothing was "
                        "saved. Try again later, or run the app locally (`python app.py`).")


@contextmanager
def new_run(session: str, experiment: str) -> Iterator[RunFolder]:
    """A run folder of `session` to write into; complete (renamed, zipped: `archive(run)`) only if the block succeeds.

    On any failure the partial folder and zip are removed; a full disk becomes a one-line AnatomyError.
    """
    sweep()
    stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{time.monotonic_ns() % 10**6:06d}"
    final = inside(RUNS_ROOT / session / f"{experiment}-{stamp}")
    partial = final.with_name(final.name + PARTIAL)
    zipped = archive_of(final)
    try:
        run = RunFolder(partial, experiment)
        yield run
        run.path = partial.rename(final)
        made = Path(shutil.make_archive(str(partial), "zip", root_dir=final))
        made.rename(zipped)
    except BaseException as err:
        for path in (partial, final, Path(str(partial) + ".zip"), zipped):
            _remove(path)
        if isinstance(err, OSError) and err.errno in NO_SPACE:
            raise disk_full_error(err, "the run folder") from None
        raise


def archive_of(run_path: Path) -> Path:
    """The zip the app offers for download, next to the run folder."""
    return run_path.with_name(run_path.name + ".zip")
