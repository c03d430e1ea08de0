"""Writing a downloaded storage file for `headrace execution file`: a chunk at a time
(never whole in memory), whole or not at all (a temporary file renamed into place, so a
broken download leaves nothing behind), never over an existing file unless asked, and
with its progress on stderr when it is big."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

import click

from headrace.api_client import Download
from headrace.errors import HeadraceError

CHUNK_BYTES = 1024 * 1024
# Smaller downloads take a blink: progress lines would only be noise.
PROGRESS_MIN_BYTES = 8 * 1024 * 1024
PROGRESS_STEP_BYTES = 8 * 1024 * 1024


class DownloadError(HeadraceError):
    """The file could not be written where asked; the message says where and why."""


class Progress:
    """Bytes so far on stderr, every PROGRESS_STEP_BYTES: one line each, or one line
    rewritten in place on a terminal."""

    def __init__(self, total: int | None) -> None:
        self.total = total
        self.enabled = total is None or total >= PROGRESS_MIN_BYTES
        self._next = PROGRESS_STEP_BYTES
        self._terminal = click.get_text_stream("stderr").isatty()
        self._shown = False

    def __call__(self, done: int) -> None:
        if self.enabled and done >= self._next:
            self._next = done - done % PROGRESS_STEP_BYTES + PROGRESS_STEP_BYTES
            self._show(done)

    def finish(self, done: int) -> None:
        if self.enabled and (self._shown or done >= PROGRESS_MIN_BYTES):
            self._show(done)
            if self._terminal:
                click.echo(err=True)

    def _show(self, done: int) -> None:
        of = "" if self.total is None else f" of {self.total:,}"
        start = "\r" if self._terminal else ""
        click.echo(f"{start}{done:,}{of} bytes", nl=not self._terminal, err=True)
        self._shown = True


def copy(download: Download, out: IO[bytes], progress: Progress) -> int:
    """Write the whole body to `out`; the bytes written. DownloadError when the server
    sent fewer bytes than it announced."""
    done = 0
    while chunk := download.read(CHUNK_BYTES):
        out.write(chunk)
        done += len(chunk)
        progress(done)
    progress.finish(done)
    if download.size is not None and done != download.size:
        raise DownloadError(f"the download stopped after {done} of {download.size} bytes")
    return done


def target_path(output: str | None, name: str) -> Path:
    """Where the file `name` goes: `output`, inside it when it is a folder, else `name`
    in the current folder."""
    if output is None:
        return Path(name)
    path = Path(output)
    return path / name if path.is_dir() else path


def check_target(target: Path, force: bool) -> None:
    """Refuse, before anything is downloaded, a target that would be overwritten or
    cannot be written."""
    if target.exists() and not force:
        raise DownloadError(f"{target} exists: pass --force to overwrite it")
    if target.is_dir():
        raise DownloadError(f"{target} is a folder")
    if not target.parent.is_dir():
        raise DownloadError(f"{target.parent} is not a folder: cannot write {target.name} there")


def save(download: Download, target: Path, force: bool, progress: Progress) -> int:
    """Write the body to `target` through a temporary file beside it; the size."""
    try:
        fd, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    except OSError as exc:
        raise DownloadError(f"cannot write in {target.parent}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "wb") as out:
            # mkstemp made it private; it gets what any new file of the user gets.
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(out.fileno(), 0o666 & ~umask)
            size = copy(download, out, progress)
        # Checked again at the end: the file may have appeared while we downloaded.
        check_target(target, force)
        os.replace(partial, target)
    except OSError as exc:
        raise DownloadError(f"cannot write {target}: {exc.strerror or exc}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
    return size


def download(
    open_body: Callable[[], contextlib.AbstractContextManager[Download]],
    name: str,
    output: str | None,
    force: bool,
) -> tuple[Path, int] | None:
    """What a download command does: the body `open_body` opens, written to `output` (a
    path, a folder: under `name`; None: `name` here) or to stdout for `-`; the file
    written and its size, or None for stdout. The target is checked before a byte
    comes."""
    target = None if output == "-" else target_path(output, name)
    if target is not None:
        check_target(target, force)
    with open_body() as body:
        progress = Progress(body.size)
        if target is None:
            copy(body, sys.stdout.buffer, progress)
            sys.stdout.buffer.flush()
            return None
        return target, save(body, target, force, progress)
