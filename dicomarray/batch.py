"""Many series on dask.distributed: one task per series, safe names, manifests, resume, report.

Each series is converted by :func:`convert_series`, a plain function of a picklable
:class:`SeriesJob`, so dask.distributed can run it on any worker. What a batch guarantees:

- **one series fails alone**: anything a series raises (a :class:`DicomArrayError`, a
  decoder's panic, which is a ``BaseException``, a worker process that dies) makes its
  report row ``failed``; the other series convert;
- **a report, always**: ``report.csv`` is written whatever happens, an interrupted run
  included (its unfinished series are ``failed`` rows saying so); one row per series
  with its status, error, output folder, outputs, figures and the warnings raised while
  converting it (collected there, not printed by the workers);
- **complete or absent**: a series is written into a partial folder and published in one
  rename (:mod:`dicomarray.staging`); its ``manifest.json`` (the series, the formats and
  outputs, the figures) is written last, so a series folder only ever appears complete.
  Partials left by a killed run are removed by the next run;
- **resume**: a complete series is ``skipped`` (with its figures from the manifest);
  asked for formats it lacks, only those are written (its other outputs are kept);
  ``overwrite=True`` redoes it. Nothing but a series' own earlier outputs or an empty
  folder is ever replaced;
- **names**: ``<patient>/<study>/<series>/`` folders made from tags by
  :func:`dicomarray.paths.series_folders`: distinct patients never share a folder (also on
  case-insensitive file systems), no name is hidden, ``..`` or one Windows reserves, and
  nothing is written outside ``out_dir`` or inside the input;
- **de-identified runs** (``deidentify=``) name folders by keyed pseudonyms, and the
  manifests, the report and the log lines carry pseudonyms only: no tag text, no original
  UID, no input path (errors and warnings say their class, not their text).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import sys
import threading
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from .deid import EDITION, Deidentifier, as_deidentifier
from .errors import DicomArrayError, DicomArrayWarning, WriteError, warn_data_problem
from .geometry import VolumeGeometry, extra_dims
from .paths import DISTINCT_HASH_LENGTH, inside, series_folders, short_hash
from .staging import Stage, check_replaceable, os_errors, remove_stale_partials, stage, staged

if TYPE_CHECKING:
    from .query import Series

logger = logging.getLogger(__name__)

#: Formats :func:`convert` can write, and the file each one makes in a series folder.
FORMATS: dict[str, str] = {
    "zarr": "image.zarr",
    "npy": "image.npy",
    "nifti": "image.nii.gz",
    "jpg": "middle.jpg",
    "orthogonal": "orthogonal.jpg",
    "montage": "montage.jpg",
    "dicom": "dicom",
}
#: Formats that are pictures: of an n-D series they show its first volume.
PICTURES = ("jpg", "orthogonal", "montage")
#: The largest modality volume (bytes) a series holds in memory while its formats are
#: written, so that its files are read once for all of them. A larger one is streamed
#: chunk by chunk: zarr, npy and nifti still share one read of each chunk, to_dicom reads
#: it twice more (its value range, then its frames), pictures read their own slices.
IN_MEMORY_BYTES = 512 * 2**20
SIDECAR = "image.json"
MANIFEST = "manifest.json"
REPORT = "report.csv"
REPORT_COLUMNS = (
    "SeriesInstanceUID",
    "PatientID",
    "status",
    "error",
    "folder",
    "outputs",
    "dims",
    "shape",
    "slices",
    "spacing_mm",
    "slice_steps",
    "seconds",
    "warnings",
)
#: Between the distinct slice steps of an irregular series in ``spacing_mm`` (``4/7``).
STEPS_SEPARATOR = "/"
#: Between the warnings of one report row.
WARNINGS_SEPARATOR = " | "
#: Exceptions that stop a series' worker instead of failing the series: the user's ^C,
#: an interpreter exit, a generator closed. Anything else fails that series alone.
_FATAL = (KeyboardInterrupt, SystemExit, GeneratorExit)
#: Series folders are ``<patient>/<study>/<series>``: their partials lie this deep.
_SERIES_DEPTH = 2


@dataclass(frozen=True)
class SeriesJob:
    """What one task needs: the series as its selection found it, where to write, and how.

    The job carries the :class:`~dicomarray.query.Series` record with its index rows, so
    the worker assembles those rows and never scans the files again (which would log
    every note about them a second time).
    """

    series: Series = field(repr=False)
    patient_id: str
    out_root: str
    out_dir: str
    formats: tuple[str, ...]
    #: None, or how to de-identify (pickled to the workers; its repr hides the key)
    deidentifier: Deidentifier | None
    overwrite: bool
    #: orientation letters and slice positions on the pictures (see dicomarray.render)
    annotate: bool = False
    #: dask scheduler for the series' own computations: "synchronous" (each series in
    #: its own thread or worker, so the warnings it raises are its own, and no nested
    #: tasks sent back to a cluster's scheduler); None keeps the current one.
    scheduler: str | None = None

    @property
    def uid(self) -> str:
        """(0020,000E) *Series Instance UID*."""
        return self.series.uid

    @property
    def output_uid(self) -> str:
        """The series' UID as its outputs show it (manifest, report, log lines): its keyed
        pseudonym in a de-identified run, else :attr:`uid`."""
        return _output_uid(self.uid, self.deidentifier)

    @property
    def files(self) -> tuple[str, ...]:
        """The series' files, in slice order."""
        return self.series.files

    @property
    def folder(self) -> str:
        """The series' output folder, relative to the output root."""
        return Path(os.path.relpath(self.out_dir, self.out_root)).as_posix()


def convert(
    root: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    config: Mapping[str, Any] | str | os.PathLike[str] | None = None,
    formats: Sequence[str] = ("zarr", "npy", "jpg"),
    client: Any = None,
    workers: int | None = None,
    deidentify: bool | Deidentifier = False,
    overwrite: bool = False,
    progress: bool = True,
    annotate: bool = False,
) -> pd.DataFrame:
    """Convert every selected series under ``root`` into ``out_dir/<patient>/<study>/<series>/``.

    Parameters
    ----------
    root : str, os.PathLike, or sequence of those
        A study tree, a file, or files; indexed with :func:`dicomarray.scan` (headers only).
    out_dir : str or os.PathLike
        Where outputs go. Nothing is ever written outside it, whatever the tags say, and
        it may not lie inside the input (for a DICOMDIR file: inside its folder).
    config : dict or path of a JSON file, optional
        Rules as in :func:`dicomarray.dicom_filter`; default: every image series. Series
        are selected by their tags only: a series that cannot be assembled is a
        ``failed`` row, not the end of the batch.
    formats : sequence of str, default ("zarr", "npy", "jpg")
        Any of ``zarr``, ``npy``, ``nifti``, ``jpg`` (the middle slice), ``orthogonal``
        (axial, coronal and sagittal side by side), ``montage`` (a grid of axial slices)
        and ``dicom`` (a new series over the series' own files, a ``dicom`` folder; with
        ``deidentify``, de-identified by ``to_dicom(deidentify=)``). A JSON sidecar is always
        written. Volumes are exported in modality values (HU for CT), float32, with all
        their dims (an n-D series' ``t``, ``echo`` ...); pictures show an n-D series'
        first volume (index 0 along each extra dim). The modality values are computed
        once per series for all formats: held in memory up to :data:`IN_MEMORY_BYTES`,
        else streamed chunk by chunk.
    client : distributed.Client, optional
        Run on this cluster. Without one, a local cluster with ``workers`` processes is
        started (and closed); ``workers=0`` runs in this process, one thread per series
        at a time (as many threads as dask's ``num_workers``, default the CPUs).
    workers : int, optional
        Worker processes of the local cluster; default: the number of CPUs.
    deidentify : bool or Deidentifier, default False
        De-identify every output (``True``: a default :class:`~dicomarray.Deidentifier`,
        whose key comes from ``DICOMARRAY_DEID_KEY`` or ``~/.config/dicomarray/deid.key``).
        Folders are then the keyed pseudonyms ``patient-<24 hex>/study-.../series-...``
        of PatientID, StudyInstanceUID and SeriesInstanceUID (the same in every run with
        the same key, so a run resumes); the manifests and the report show the
        pseudonyms of SeriesInstanceUID (``2.25.<int>``) and PatientID (``ANON...``), and
        nothing from a tag or an input path: errors are their class, what it means and
        the series' folder, warnings their class and count, and the log lines of the run
        (dicomarray's and its libraries') are withheld but for their level and folder.
    overwrite : bool, default False
        Redo series whose outputs are complete; by default they are ``skipped``, or
        completed with the formats they lack.
    progress : bool, default True
        A progress line over series on stderr (and the dashboard link of a cluster).
    annotate : bool, default False
        Orientation letters and the slice position on the pictures (jpg, orthogonal,
        montage), as :func:`dicomarray.render.write_slice` draws them.

    A NIfTI of an unevenly spaced series is written on its finest regular slice step
    (``to_nifti(equalize=True)``); its row's warnings say so.

    Returns
    -------
    pandas.DataFrame
        One row per series, the columns :data:`REPORT_COLUMNS`: SeriesInstanceUID,
        PatientID (their pseudonyms in a de-identified run), status (``ok``, ``failed``,
        ``skipped``), error, folder (relative to ``out_dir``), outputs (``;``-separated),
        dims (``t,z,y,x``), shape (``3x12x64x64``, in the order of dims), slices,
        spacing_mm, slice_steps, seconds, warnings (`` | ``-separated). Also written to
        ``out_dir/report.csv``, in every case. ``spacing_mm`` is ``slice x row x column`` in mm,
        e.g. ``5 x 0.45 x 0.45``; a series without one slice step has the step of each run of
        slices in their order instead, ``/``-separated (``4/7 x 0.45 x 0.45``: 4 mm apart,
        then 7 mm), never one made-up step; ``-`` when unknown (one slice).
        ``slice_steps`` says the runs in one sentence ("two blocks: 14 slices at 4 mm,
        then 14 at 7 mm after slice 13 (z = 52 mm)"), as
        :meth:`dicomarray.geometry.VolumeGeometry.describe_steps`.

    Raises
    ------
    DicomArrayError
        An unknown format, an output folder inside the input, a malformed ``config``
        (``report.csv`` is still written, empty), an output folder that cannot be made or
        a ``report.csv`` there that is not a batch report (nothing is written).
    """
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise DicomArrayError(f"unknown formats {unknown}; choose from {sorted(FORMATS)}")
    deidentifier = as_deidentifier(deidentify)  # a generated key's warning: before any work
    out = Path(out_dir)
    _check_outside_input(root, out)
    with os_errors(out):
        out.mkdir(parents=True, exist_ok=True)
    # before any work: a report.csv that is not ours would only be refused at the end
    check_replaceable(out / REPORT, overwrite=True, replaceable=_is_report, kind="batch report")
    remove_stale_partials(out, depth=_SERIES_DEPTH)
    jobs: list[SeriesJob] = []
    rows: dict[int, dict[str, Any]] = {}
    try:
        with _withheld(deidentifier, "indexing the input"):
            jobs = plan_jobs(root, out, config, tuple(formats), deidentifier, overwrite, annotate)
        _run(jobs, rows, client, workers, progress)
    finally:
        report = _report(jobs, rows)
        _write_report(report, out / REPORT)
    return report


def _check_outside_input(
    root: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], out: Path
) -> None:
    """Outputs never go into the input: the inputs stay as they were.

    The input of a folder is the folder; of a file, the file, and of a DICOMDIR its folder
    (whose files it lists).
    """
    target = out.resolve()
    paths = [root] if isinstance(root, str | os.PathLike) else list(root)
    for path in map(Path, paths):
        source = path.resolve()
        tree = source.parent if source.is_file() and source.name.upper() == "DICOMDIR" else source
        if target == tree or tree in target.parents:
            raise DicomArrayError(
                f"{out}: the output folder is inside the input tree {path}; choose one outside it"
            )


def plan_jobs(
    root: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    out: Path,
    config: Mapping[str, Any] | str | os.PathLike[str] | None,
    formats: tuple[str, ...],
    deidentifier: Deidentifier | None,
    overwrite: bool,
    annotate: bool = False,
) -> list[SeriesJob]:
    """One job per selected series, each with its own safe output folder."""
    from .query import dicom_filter

    taken: set[str] = set()
    jobs = []
    for series in dicom_filter(root, config or {}):
        tags = {**series.meta, "SeriesInstanceUID": series.uid}
        relative = "/".join(series_folders(tags, deidentifier=deidentifier))
        folder = _unique(relative, _output_uid(series.uid, deidentifier), taken, out)
        target = out.absolute() / folder  # checked against symlinks when written
        jobs.append(
            SeriesJob(
                series=series,
                patient_id=_reported_patient(series.meta, deidentifier),
                out_root=str(out.absolute()),
                out_dir=str(target),
                formats=formats,
                deidentifier=deidentifier,
                overwrite=overwrite,
                annotate=annotate,
            )
        )
    return jobs


def _output_uid(uid: str, deidentifier: Deidentifier | None) -> str:
    return uid if deidentifier is None else deidentifier.pseudonyms.uid(uid)


def _reported_patient(meta: Mapping[str, Any], deidentifier: Deidentifier | None) -> str:
    """The patient as the report shows it: the PatientID, or the pseudonym a de-identified
    DICOM copy carries as its PatientID."""
    patient = meta.get("PatientID", "")
    return str(patient) if deidentifier is None else deidentifier.pseudonyms.patient_id(patient)


def _unique(folder: str, uid: str, taken: set[str], out: Path) -> str:
    """The folder, or the folder with a hash of the (output) UID when another series has it.

    Another series has it when this run gave it to one already (compared without case,
    as a case-insensitive file system would), or when the folder on disk holds another
    series' outputs (from an earlier run with a different selection).
    """
    owner = read_manifest(out / folder)
    if folder.casefold() in taken or (owner is not None and owner["SeriesInstanceUID"] != uid):
        folder = f"{folder}-{short_hash(uid, DISTINCT_HASH_LENGTH)}"
    taken.add(folder.casefold())
    return folder


# --------------------------------------------------------------------------------------------
# Running the jobs: every job ends as a row, whatever it raises
# --------------------------------------------------------------------------------------------


def _run(
    jobs: list[SeriesJob],
    rows: dict[int, dict[str, Any]],
    client: Any,
    workers: int | None,
    progress: bool,
) -> None:
    """Run the jobs, putting each one's row into ``rows`` (by job index) as it ends."""
    if not jobs:
        return
    # one thread (or worker) per series: its warnings are its own, no nested cluster tasks
    jobs = [replace(job, scheduler="synchronous") for job in jobs]
    if client is None and workers == 0:
        _run_threaded(jobs, rows, progress)
    elif client is not None:
        _run_on(client, jobs, rows, progress)
    else:
        from distributed import Client, LocalCluster

        n_workers = workers or os.cpu_count() or 1
        with (
            LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True) as cluster,
            Client(cluster) as local,
        ):
            _run_on(local, jobs, rows, progress)


def _run_threaded(jobs: list[SeriesJob], rows: dict[int, dict[str, Any]], progress: bool) -> None:
    import dask

    pool = ThreadPoolExecutor(dask.config.get("num_workers", None) or os.cpu_count() or 1)
    try:
        futures = {pool.submit(convert_series, job): i for i, job in enumerate(jobs)}
        _collect(as_completed(futures), futures.__getitem__, jobs, rows, progress)
    finally:
        # on ^C: series not started are dropped; running ones end in their threads
        pool.shutdown(wait=False, cancel_futures=True)


def _run_on(
    client: Any, jobs: list[SeriesJob], rows: dict[int, dict[str, Any]], progress: bool
) -> None:
    from distributed import as_completed as completed

    if progress:
        print(f"dask dashboard: {client.dashboard_link}", file=sys.stderr)
    futures = client.map(convert_series, jobs, pure=False)
    index = {future.key: i for i, future in enumerate(futures)}
    try:
        _collect(completed(futures), lambda future: index[future.key], jobs, rows, progress)
    finally:
        client.cancel([future for future in futures if not future.done()])


def _collect(
    finished: Iterable[Any],
    position: Callable[[Any], int],
    jobs: list[SeriesJob],
    rows: dict[int, dict[str, Any]],
    progress: bool,
) -> None:
    """Put each future's row into ``rows`` as it finishes (``position``: its job index)."""
    for done, future in enumerate(finished, start=1):
        i = position(future)
        rows[i] = _row_of(future, jobs[i])
        if progress:
            _show_progress(done, len(jobs))


def _row_of(future: Any, job: SeriesJob) -> dict[str, Any]:
    """A finished future's row; one that raised (a dead worker, an exit in a thread) fails."""
    try:
        return future.result()
    except BaseException as exc:  # noqa: BLE001 - the future is done: nothing is interrupted
        return _failed(_row(job), exc, job)


def _show_progress(done: int, total: int) -> None:
    end = "\n" if done == total else ""
    print(f"\rseries {done}/{total}", end=end, file=sys.stderr, flush=True)


def _report(jobs: list[SeriesJob], rows: dict[int, dict[str, Any]]) -> pd.DataFrame:
    """One row per job, in plan order; jobs that never ended are failed rows saying so."""
    records = [
        rows.get(i) or _row(job, status="failed", error="not run: the batch was stopped first")
        for i, job in enumerate(jobs)
    ]
    return pd.DataFrame.from_records(records, columns=list(REPORT_COLUMNS))


# --------------------------------------------------------------------------------------------
# One series
# --------------------------------------------------------------------------------------------


def convert_series(job: SeriesJob) -> dict[str, Any]:
    """Convert one series; returns its report row. A failure is a row with status ``failed``.

    Only what stops the worker itself (:data:`_FATAL`: ``KeyboardInterrupt``,
    ``SystemExit``) is raised; anything else a series raises, ``BaseException`` s from
    decoders included, fails that series alone. The warnings raised while converting it
    are its row's ``warnings``.
    """
    started = time.perf_counter()
    row = _row(job)
    withheld = _withheld_logs(job.folder) if job.deidentifier else nullcontext()
    with collected_warnings() as seen, withheld:
        try:
            row.update(_convert(job))
        except _FATAL:
            raise
        except BaseException as exc:  # noqa: BLE001 - one failed series must not stop the others
            _failed(row, exc, job)
    shown = withheld_warnings(seen) if job.deidentifier else seen
    row["warnings"] = WARNINGS_SEPARATOR.join(dict.fromkeys(shown))
    row["seconds"] = round(time.perf_counter() - started, 3)
    return row


def _row(job: SeriesJob, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "SeriesInstanceUID": job.output_uid,
        "PatientID": job.patient_id,
        "status": "ok",
        "error": "",
        "folder": job.folder,
        "outputs": "",
        "dims": "",
        "shape": "",
        "slices": job.series.n_slices,  # a failed series' too: the frames selected
        "spacing_mm": "",
        "slice_steps": "",
        "seconds": 0.0,
        "warnings": "",
    }
    row.update(values)
    return row


def _failed(row: dict[str, Any], exc: BaseException, job: SeriesJob) -> dict[str, Any]:
    error = f"{type(exc).__name__}: {exc}" if job.deidentifier is None else _summary(exc, job)
    row.update(status="failed", error=error)
    logger.warning("series %s failed: %s", job.output_uid, error)
    if job.deidentifier is None:  # a traceback holds paths, tag values and descriptions
        logger.debug("%s", "".join(traceback.format_exception(exc)))
    return row


def _summary(exc: BaseException, job: SeriesJob) -> str:
    """A de-identified run's error: its class, what the class means and the series'
    pseudonym folder, never its message.

    A message from deep code may hold an input path, a UID or a description, and no
    scrubbing of free text can be sure to find them all; a class's docstring is the
    package's own text, whatever the data.
    """
    meaning = (type(exc).__doc__ or "").strip().partition("\n")[0]
    return (
        f"{type(exc).__name__} in {job.folder}: {meaning} (details withheld in a "
        f"de-identified run; convert this series without deidentify to see them)"
    )


def _convert(job: SeriesJob) -> dict[str, Any]:
    """Skip, complete or (re)write a series' folder; the row's figures from its manifest."""
    # a symlink under the output folder must not lead writes elsewhere
    folder = inside(job.out_root, job.out_dir)
    previous = None if job.overwrite else read_manifest(folder, job.output_uid)
    formats = job.formats
    if previous is not None:
        if previous.get("deidentify", False) != _deidentification(job.deidentifier):
            raise DicomArrayError(
                f"{job.folder} holds this series de-identified otherwise "
                f"(deidentify: {json.dumps(previous.get('deidentify', False))}); pass "
                f"overwrite=True to redo it"
            )
        formats = tuple(f for f in job.formats if f not in previous.get("formats", ()))
        if not formats:
            return _figures(previous, status="skipped")
    return _figures(_write_outputs(job, folder, formats, previous), status="ok")


#: The report's columns that a manifest keeps, so a skipped series reports them too.
_FIGURES = ("dims", "shape", "slices", "spacing_mm", "slice_steps")


def _figures(manifest: Mapping[str, Any], *, status: str) -> dict[str, Any]:
    figures = {"status": status, "outputs": ";".join(manifest["outputs"])}
    figures.update({k: manifest[k] for k in _FIGURES if k in manifest})
    return figures


def _write_outputs(
    job: SeriesJob, folder: Path, formats: tuple[str, ...], previous: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Write ``formats`` (and keep ``previous`` outputs) in a partial folder; publish it.

    A series folder therefore only ever appears complete, even when two runs write into
    the same output folder at once or a run is killed half way. When a concurrent run has
    published this series' complete folder meanwhile, its outputs stand (unless
    ``overwrite``) and ours are discarded. Returns the manifest.
    """
    import dask

    replaceable = functools.partial(_is_replaceable, uid=job.output_uid)
    output = stage(
        folder, overwrite=True, folder=True, replaceable=replaceable, kind="dicomarray series"
    )
    inside(job.out_root, folder.parent)  # again, now that the parents exist
    try:
        output.partial.mkdir()
        setting = dask.config.set(scheduler=job.scheduler) if job.scheduler else nullcontext()
        with setting:
            volume = job.series.open()
            outputs = _write_formats(volume.dicom.hu(), output.partial, formats, job)
        kept = _keep_outputs(previous, folder, output.partial, outputs) if previous else []
        all_formats = [*(previous or {}).get("formats", []), *formats]
        manifest = _manifest(job, all_formats, [*outputs, *kept], volume)
        write_manifest(output.partial, manifest)
        current = read_manifest(folder, job.output_uid)
        if job.overwrite or current is None or not set(all_formats) <= set(current["formats"]):
            _publish(output, job.output_uid)
    finally:
        output.discard()
    return manifest


def _write_formats(values: Any, folder: Path, formats: Iterable[str], job: SeriesJob) -> list[str]:
    """Write every format from one computation of the modality values.

    The values are held in memory when they fit (:func:`_read_once`); the exports that
    stream (zarr, npy, nifti, dicom) are then computed together, so chunks read from the
    files are shared by all of them even when the values do not fit.
    """
    from .writers.common import compute_and_wait

    values = _read_once(values)
    outputs = [SIDECAR]
    if "npy" not in formats:  # the npy writer writes the same sidecar
        _sidecar(values, folder / SIDECAR, job)
    exports = []
    for name in formats:
        source = first_volume(values) if name in PICTURES else values
        exports.append(_WRITERS[name](source, folder / FORMATS[name], job))
        outputs.append(FORMATS[name])
    compute_and_wait(*(export for export in exports if export is not None))
    return outputs


def _read_once(values: Any) -> Any:
    """The values computed and held in memory, when they fit in :data:`IN_MEMORY_BYTES`.

    Every format then reads them from memory, so each file is read once per series;
    larger values stay lazy (each chunk is read where an export needs it).
    """
    if values.nbytes > IN_MEMORY_BYTES or not hasattr(values.data, "dask"):
        return values
    return values.persist()


def first_volume(values: Any) -> Any:
    """The first volume of an n-D series (index 0 along each extra dim); a 3-D one as it is."""
    return values.isel({d: 0 for d in extra_dims(values)})


def _keep_outputs(
    previous: Mapping[str, Any], old: Path, new: Path, written: list[str]
) -> list[str]:
    """Carry the earlier outputs not written anew into the new folder (as hard links)."""
    kept = [name for name in previous["outputs"] if name not in written and name != MANIFEST]
    for name in kept:
        if (old / name).is_dir():
            shutil.copytree(old / name, new / name, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(old / name, new / name)
    return kept


def _link_or_copy(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """A hard link (no copy of the data), or a copy where the file system has none."""
    try:
        os.link(source, target, follow_symlinks=False)
    except OSError:
        shutil.copy2(source, target, follow_symlinks=False)


def _manifest(
    job: SeriesJob, formats: Iterable[str], outputs: Iterable[str], volume: Any
) -> dict[str, Any]:
    return {
        "SeriesInstanceUID": job.output_uid,
        "formats": list(dict.fromkeys(formats)),
        "outputs": list(dict.fromkeys(outputs)),
        "deidentify": _deidentification(job.deidentifier),
        "files": len(job.files),
        "dims": ",".join(str(d) for d in volume.dims),
        "shape": "x".join(str(n) for n in volume.shape),
        **_geometry_figures(VolumeGeometry.of(volume)),
    }


def _deidentification(deidentifier: Deidentifier | None) -> Any:
    """A manifest's ``deidentify``: false, or the profile and the options (which a resumed
    run must share, so that one folder never mixes two de-identifications)."""
    if deidentifier is None:
        return False
    options = [option.column for option in deidentifier.options.enabled]
    return {"profile": f"PS3.15 {EDITION} Basic", "options": options}


def _geometry_figures(geometry: VolumeGeometry) -> dict[str, Any]:
    """The report's slices, spacing_mm and slice_steps (see :func:`convert`)."""
    spacing = geometry.spacing
    if spacing["z"] is not None:
        z = _mm(spacing["z"])
    elif geometry.n_slices > 1:  # no one step: each run's, in order, never a median
        z = STEPS_SEPARATOR.join(_mm(abs(step)) for _n, step in geometry.step_runs())
    else:
        z = "-"
    return {
        "slices": geometry.n_slices,
        "spacing_mm": " x ".join([z, _mm(spacing["y"]), _mm(spacing["x"])]),
        "slice_steps": geometry.describe_steps(),
    }


def _mm(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _is_replaceable(folder: Path, uid: str) -> bool:
    """Only an empty folder or this series' own outputs may be replaced: nothing else is lost."""
    if read_manifest(folder, uid) is not None:
        return True
    return folder.is_dir() and not any(folder.iterdir())


def _publish(output: Stage, uid: str) -> None:
    """Publish, unless a concurrent run has just put this series' complete folder in place."""
    try:
        output.publish()
    except WriteError:  # the rename lost the race to a concurrent run's
        if read_manifest(output.final, uid) is None:
            raise


def read_manifest(folder: Path, uid: str | None = None) -> dict[str, Any] | None:
    """The manifest of a complete series folder (of series ``uid``, if given), else None."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or (
        uid is not None and manifest.get("SeriesInstanceUID") != uid
    ):
        return None
    outputs = manifest.get("outputs", [])
    if not all((folder / name).exists() for name in outputs):
        return None
    return manifest


def write_manifest(folder: Path, manifest: Mapping[str, Any]) -> None:
    """Written last into the partial folder: its presence means the series is complete."""
    text = json.dumps(dict(manifest), indent=2)
    (folder / MANIFEST).write_text(text + "\n", encoding="utf-8")


def _write_report(report: pd.DataFrame, path: Path) -> None:
    """Write ``report.csv``, replacing only an earlier batch report."""
    with staged(path, overwrite=True, replaceable=_is_report, kind="batch report") as output:
        report.to_csv(output.partial, index=False)


def _is_report(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as file:
            return file.readline().startswith(f"{REPORT_COLUMNS[0]},")
    except (OSError, UnicodeDecodeError):
        return False


# --------------------------------------------------------------------------------------------
# Warnings raised while a series converts: collected into its row
# --------------------------------------------------------------------------------------------

_collecting = threading.local()
_router_lock = threading.Lock()
_router: list[Any] = []  # while any thread collects: [catch_warnings, the showwarning before]


@contextlib.contextmanager
def collected_warnings() -> Iterator[list[str]]:
    """Collect the warnings this thread raises in the block, instead of showing them.

    Each warning is kept as ``"Category: message"``, every time it is raised (the filters
    say ``always`` while any thread collects). Warnings of other threads are shown as
    before. Thread-safe: the warnings module is set up once for all collecting threads
    and restored when the last one ends.
    """
    seen: list[str] = []
    _start_routing()
    outer = getattr(_collecting, "seen", None)
    _collecting.seen = seen
    try:
        yield seen
    finally:
        _collecting.seen = outer
        _stop_routing()


def _start_routing() -> None:
    with _router_lock:
        if not _router:
            catcher = warnings.catch_warnings()
            catcher.__enter__()
            warnings.simplefilter("always")
            _router.extend([catcher, warnings.showwarning])
            warnings.showwarning = _route
        _router.append(None)  # one more collecting thread


def _stop_routing() -> None:
    with _router_lock:
        _router.pop()
        if len(_router) == 2:
            catcher, _shown = _router
            _router.clear()
            catcher.__exit__(None, None, None)


def _route(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    seen = getattr(_collecting, "seen", None)
    if seen is not None:
        seen.append(f"{category.__name__}: {message}")
    elif _router:
        if _withholding.runs:  # a helper thread of a de-identified series (frame reads)
            message = WITHHELD
        _router[1](message, category, *args, **kwargs)


# --------------------------------------------------------------------------------------------
# A de-identified run: log lines and warnings say what happened, never their text
# --------------------------------------------------------------------------------------------

#: What stands for the text of a warning or log line in a de-identified run: a message
#: from deep code (dicomarray's, pydicom's, a codec's) may hold paths, UIDs or tag values.
WITHHELD = "details withheld in a de-identified run"


class _Withholding(threading.local):
    """This thread's place in a de-identified run (None: not in one); ``runs`` (shared by
    all threads) counts the de-identified blocks running in this process."""

    where: str | None = None
    runs = 0


_withholding = _Withholding()
_withholding_lock = threading.Lock()


def withheld_warnings(seen: Iterable[str]) -> list[str]:
    """Collected ``"Category: message"`` warnings as a de-identified report shows them:
    each category and how many times it was raised, without their text."""
    counts = Counter(entry.partition(": ")[0] for entry in seen)
    return [f"{category}: {n} x, {WITHHELD}" for category, n in counts.items()]


@contextlib.contextmanager
def _withheld(deidentifier: Deidentifier | None, where: str) -> Iterator[None]:
    """In a de-identified run, the block's log lines and warnings (this thread's) are
    withheld: its warnings are warned again after it, one per category, without text."""
    if deidentifier is None:
        yield
        return
    with collected_warnings() as seen, _withheld_logs(where):
        yield
    for line in withheld_warnings(seen):
        warn_data_problem(f"{where}: {line}", DicomArrayWarning)


@contextlib.contextmanager
def _withheld_logs(where: str) -> Iterator[None]:
    """Log records made while the block runs say their level, logger and ``where`` only.

    Any logger's (pydicom's and codecs' too), from any thread while a de-identified block
    runs in this process (the frame-reading threads of a series log for it), but the
    batch's own lines, which are made of pseudonyms. Done in the record factory, the one
    place every record passes whatever logger and handler it goes to.
    """
    _install_record_factory()
    outer = _withholding.where
    with _withholding_lock:
        _Withholding.runs += 1
    _withholding.where = where
    try:
        yield
    finally:
        _withholding.where = outer
        with _withholding_lock:
            _Withholding.runs -= 1


_factory_installed: list[bool] = []


def _install_record_factory() -> None:
    """Put :func:`_withholding_factory` before the current record factory, once per process
    (it is a no-op outside de-identified runs, so it stays: removing it later would undo
    any factory installed after it)."""
    with _withholding_lock:
        if _factory_installed:
            return
        logging.setLogRecordFactory(
            functools.partial(_withholding_factory, logging.getLogRecordFactory())
        )
        _factory_installed.append(True)


def _withholding_factory(
    make: Callable[..., logging.LogRecord], *args: Any, **kwargs: Any
) -> logging.LogRecord:
    record = make(*args, **kwargs)
    if _Withholding.runs and record.name != __name__:
        where = _withholding.where or "a de-identified batch"
        record.msg, record.args = f"%s ({WITHHELD})", (where,)
        record.exc_info, record.exc_text, record.stack_info = None, None, None
    return record


def _sidecar(volume: Any, path: Path, job: SeriesJob) -> None:
    from .writers.metadata import write_sidecar

    write_sidecar(volume, path, deidentify=_deidentify_arg(job))


def _nifti(volume: Any, path: Path, job: SeriesJob) -> Any:
    """NIfTI holds one slice step: an unevenly spaced series is written on its finest
    regular step (dcm2niix's ``_Eq``), and the row's warnings say so."""
    geometry = volume.dicom.geometry
    if not geometry.is_regular:
        warn_data_problem(
            f"NIfTI written equalized onto the finest slice step: the slices have no one "
            f"step ({geometry.describe_steps()})"
        )
    return volume.dicom.to_nifti(
        path, equalize=True, compute=False, deidentify=_deidentify_arg(job)
    )


def _deidentify_arg(job: SeriesJob) -> Any:
    """The exporters' ``deidentify=``: the job's Deidentifier itself, never ``True`` (which
    would resolve a default key, not the run's), else False."""
    return job.deidentifier or False


def _deidentify_kwargs(job: SeriesJob) -> dict[str, Any]:
    """``to_dicom`` takes ``deidentify=`` only in a de-identified run: without one it
    writes as it always did."""
    return {} if job.deidentifier is None else {"deidentify": job.deidentifier}


#: Each format's writer: the exports that stream return a Delayed (computed together by
#: :func:`_write_formats`), the pictures write at once (each reads only its own slices).
_WRITERS: dict[str, Callable[[Any, Path, SeriesJob], Any]] = {
    "zarr": lambda v, p, job: v.dicom.to_zarr(p, deidentify=_deidentify_arg(job), compute=False),
    "npy": lambda v, p, job: v.dicom.to_npy(
        p, json_path=p.parent / SIDECAR, deidentify=_deidentify_arg(job), compute=False
    ),
    "nifti": _nifti,
    "dicom": lambda v, p, job: v.dicom.to_dicom(p, compute=False, **_deidentify_kwargs(job)),
    "jpg": lambda v, p, job: v.dicom.to_jpg(p, annotate=job.annotate),
    "orthogonal": lambda v, p, job: v.dicom.orthogonal(p, annotate=job.annotate),
    "montage": lambda v, p, job: v.dicom.montage(p, annotate=job.annotate),
}
