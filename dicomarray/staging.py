"""Staging outputs: written under a hidden name beside the target, published in one rename.

Every output the package writes (the writers' files and folders, pictures, batch series
folders, the batch report, the sample study) goes through these rules:

- **stage**: the output is written under a hidden *partial* name in the target's own
  folder, ``.<name>.<owner>.partial`` (see :func:`partial_path`), so that publishing it
  is a rename on one file system;
- **publish**: it is renamed to its final name only once complete (:func:`publish`), so
  the final name never holds a half-written output;
- **discard**: on any failure, :class:`KeyboardInterrupt` included, the partial is
  removed (:func:`discard`);
- **replace**: an existing target is replaced only with ``overwrite=True``, and then only
  when it is of the same kind (a file by a file, a folder by a folder) and, where the
  caller says what it may replace (``replaceable``), an earlier output of the same kind,
  so that a mistyped path never deletes a folder of other files. Without ``overwrite``
  the :class:`~dicomarray.errors.WriteError` names the keyword to pass;
- **permissions**: partials are made with plain :func:`open` and :meth:`pathlib.Path.mkdir`,
  so outputs get the permissions those give under the user's umask (``0644`` files and
  ``0755`` folders under umask ``022``), never the private ``0600`` / ``0700`` of
  :func:`tempfile.mkstemp` and :func:`tempfile.mkdtemp`;
- **stale partials**: the ``<owner>`` part of a partial's name records the host and the
  process writing it, so :func:`remove_stale_partials` can tell the leftovers of a killed
  process (removed) from the partials of a run still going (kept).

A :class:`Stage` from :func:`stage` (:func:`staged` when it reads better) used as a
context manager is all four steps around a block that writes one output; writers whose
work runs later in dask tasks call its steps themselves.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import socket
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import WriteError
from .paths import short_hash

logger = logging.getLogger(__name__)

#: Suffix of every partial output.
PARTIAL_SUFFIX = ".partial"
#: Longest part (in bytes) of the target's name kept in a partial's name, so that the
#: partial's name stays within the 255 bytes most file systems allow.
_NAME_PART = 160
_HOST = short_hash(socket.gethostname(), 6)
_PARTIAL = re.compile(
    r"^\..*\.(?P<host>[0-9a-f]{6})-(?P<pid>\d+)-[0-9a-f]{8}" + re.escape(PARTIAL_SUFFIX) + "$", re.S
)

Replaceable = Callable[[Path], bool]


# --------------------------------------------------------------------------------------------
# The steps
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def os_errors(target: Path) -> Iterator[None]:
    """Raise an :class:`OSError` (no permission, disk full) as a WriteError naming ``target``."""
    try:
        yield
    except OSError as exc:
        raise _write_error(target, exc) from exc


def _write_error(target: Path, exc: OSError) -> WriteError:
    return WriteError(f"{target}: cannot write: {exc.strerror or exc}")


def partial_path(final: Path) -> Path:
    """A fresh hidden name beside ``final``: ``.<name>.<host>-<pid>-<random>.partial``.

    On the same file system as ``final``, so that :func:`publish` is one rename; the host
    and process id say whose it is, for :func:`remove_stale_partials`.
    """
    token = f"{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    name = os.fsencode(final.name)[:_NAME_PART].decode(errors="ignore")
    return final.with_name(f".{name}.{token}{PARTIAL_SUFFIX}")


def publish(
    partial: Path,
    final: Path,
    *,
    overwrite: bool,
    replaceable: Replaceable | None = None,
    kind: str | None = None,
) -> Path:
    """Rename a complete partial file or folder to its final name.

    The replace rules of :func:`stage` are checked again, since the target may have
    appeared while the output was written. A folder cannot be replaced in one rename: the
    old one is first renamed aside (to a partial name), then removed; if the new one
    cannot be renamed into place, the old one is put back.

    Raises
    ------
    WriteError
        The target appeared meanwhile and may not be replaced, or the rename failed (the
        message names the target); the partial is discarded.
    """
    folder = partial.is_dir()
    with discarding([partial]):
        check_replaceable(
            final, overwrite=overwrite, folder=folder, replaceable=replaceable, kind=kind
        )
        with os_errors(final):
            _rename(partial, final, folder=folder)
    return final


def _rename(partial: Path, final: Path, *, folder: bool) -> None:
    if not _exists(final):
        _rename_new(partial, final)
    elif folder:
        _replace_folder(partial, final)
    else:
        os.replace(partial, final)


def _replace_folder(partial: Path, final: Path) -> None:
    """A folder cannot be replaced in one rename: the old one is renamed aside first."""
    aside = partial_path(final)
    os.rename(final, aside)
    try:
        os.rename(partial, final)
    except BaseException:
        os.rename(aside, final)  # the old output stays where it was
        raise
    discard(aside)


def discard(path: Path) -> None:
    """Remove a partial file or folder if it is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@dataclass(frozen=True)
class Stage:
    """One output being staged: written as ``partial``, published as ``final``.

    Holds the replace rules of :func:`stage`, so that :meth:`publish` checks them
    again however much later it runs (in a dask task, say). Picklable.
    """

    partial: Path
    final: Path
    overwrite: bool
    folder: bool = False
    replaceable: Replaceable | None = None
    kind: str | None = None

    def publish(self) -> Path:
        """Rename the complete partial to the final name; see :func:`publish`."""
        return publish(
            self.partial,
            self.final,
            overwrite=self.overwrite,
            replaceable=self.replaceable,
            kind=self.kind,
        )

    def discard(self) -> None:
        """Remove the partial, if it is there."""
        discard(self.partial)

    def __enter__(self) -> Stage:
        """Start writing: a folder's partial is made, empty."""
        if self.folder:
            with os_errors(self.final):
                self.partial.mkdir()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _: Any
    ) -> None:
        """Publish the output the block completed; discard it on any failure."""
        if error is None:
            with discarding([self.partial]), os_errors(self.final):
                self.publish()
            return
        self.discard()
        if isinstance(error, OSError):
            raise _write_error(self.final, error) from error


def stage(
    path: str | os.PathLike[str],
    *,
    overwrite: bool,
    folder: bool = False,
    replaceable: Replaceable | None = None,
    kind: str | None = None,
) -> Stage:
    """Check an output's target and choose its partial name; the parent folder is made.

    Nothing else is created: the caller writes ``stage.partial``, then calls
    ``stage.publish()``, or ``stage.discard()`` on failure; or uses the stage in a
    ``with`` block, which does both (see :func:`staged`).

    Parameters
    ----------
    path : str or os.PathLike
        Where the output goes.
    overwrite : bool
        Whether an existing output may be replaced.
    folder : bool, default False
        Whether the output is a folder (a zarr store, a DICOM series) or a file.
    replaceable : callable, optional
        ``replaceable(existing) -> bool``: whether an existing target is an earlier
        output of this kind, which ``overwrite`` may replace. Default: any file may be
        replaced by a file; a folder may not be replaced.
    kind : str, optional
        What the output is ("zarr store", "DICOM series"), for messages.

    Returns
    -------
    Stage
        The absolute final path, its partial and these rules.

    Raises
    ------
    WriteError
        The target exists and ``overwrite`` is False, or it may not be replaced.
    """
    final = Path(path).expanduser().absolute()
    check_replaceable(final, overwrite=overwrite, folder=folder, replaceable=replaceable, kind=kind)
    with os_errors(final):
        final.parent.mkdir(parents=True, exist_ok=True)
    return Stage(partial_path(final), final, overwrite, folder, replaceable, kind)


#: :func:`stage` in a ``with`` block: the block writes ``output.partial`` (a folder is
#: already created, empty); when it ends the output is published, and when it raises
#: (anything, :class:`KeyboardInterrupt` included) the partial is discarded and the
#: exception goes on, an :class:`OSError` as a WriteError naming the target; nothing
#: appears under the final name.
#:
#: >>> with staged(tmp / "notes.txt", overwrite=False) as output:  # doctest: +SKIP
#: ...     output.partial.write_text("complete or absent")
staged = stage


@contextlib.contextmanager
def discarding(partials: Iterable[Path]) -> Iterator[None]:
    """Discard ``partials`` when the block raises (anything), then re-raise."""
    try:
        yield
    except BaseException:
        for path in partials:
            discard(path)
        raise


# --------------------------------------------------------------------------------------------
# Leftovers of killed processes
# --------------------------------------------------------------------------------------------


def remove_stale_partials(root: str | os.PathLike[str], *, depth: int = 0) -> list[Path]:
    """Remove the partials that processes which have ended left in ``root``.

    A partial is stale when its name says it was made on this host by a process that is
    no longer running (a run that was killed). Partials of running processes, of other
    hosts (their processes cannot be checked from here) and every other name are kept.

    Parameters
    ----------
    root : str or os.PathLike
        The folder to look in.
    depth : int, default 0
        Also look in sub-folders down to this many levels (hidden ones excepted).

    Returns
    -------
    list of pathlib.Path
        The partials removed.
    """
    removed = []
    for entry in _entries(Path(root), depth):
        if is_stale(entry):
            discard(entry)
            removed.append(entry)
            logger.info("removed %s, left by a process that has ended", entry)
    return removed


def is_stale(path: Path) -> bool:
    """Whether ``path`` is a partial left on this host by a process that has ended."""
    match = _PARTIAL.match(path.name)
    if match is None or match["host"] != _HOST:
        return False
    return not _is_running(int(match["pid"]))


def _entries(folder: Path, depth: int) -> Iterator[Path]:
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        yield Path(entry.path)
        hidden = entry.name.startswith(".")
        if depth > 0 and not hidden and entry.is_dir(follow_symlinks=False):
            yield from _entries(Path(entry.path), depth - 1)


def _is_running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if os.name == "nt":  # os.kill would terminate it: leave every partial alone there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process: it is running
        return True
    return True


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def check_replaceable(
    final: Path,
    *,
    overwrite: bool,
    folder: bool = False,
    replaceable: Replaceable | None = None,
    kind: str | None = None,
) -> None:
    """Refuse to replace ``final`` unless the replace rules allow it; see :func:`stage`.

    Raises
    ------
    WriteError
        ``final`` exists, and ``overwrite`` is False or it may not be replaced.
    """
    if not _exists(final):
        return
    existing_folder = final.is_dir() and not final.is_symlink()
    what = kind or ("folder" if folder else "file")
    # first what overwrite=True could not change, so that the message never suggests it
    if existing_folder != folder:
        found = "folder" if existing_folder else "file"
        raise WriteError(f"{final} is a {found}; not replacing it with a {what}")
    if (replaceable is not None and not replaceable(final)) or (folder and replaceable is None):
        raise WriteError(f"{final} exists and is not a {what} export; nothing was replaced")
    if not overwrite:
        raise WriteError(f"{final} already exists; pass overwrite=True to replace it")


def _rename_new(partial: Path, final: Path) -> None:
    """Rename to a name that did not exist a moment ago, never replacing one that appeared.

    For a file, a hard link fails if the name appeared meanwhile; where the file system
    has no hard links, a plain rename is the best there is. ``os.rename`` of a folder
    never replaces a non-empty folder.
    """
    if not partial.is_dir():
        try:
            os.link(partial, final)
        except FileExistsError:
            raise WriteError(
                f"{final} appeared while writing; pass overwrite=True to replace it"
            ) from None
        except OSError:
            pass  # no hard links here (FAT, some network shares)
        else:
            partial.unlink()
            return
    os.rename(partial, final)
