"""Many series on dask.distributed: one task per series, safe names, manifests, resume, report.

Each series is converted by :func:`convert_series`, a plain function of a picklable
:class:`SeriesJob`, so dask.distributed can run it on any worker. A series' outputs are
complete only when its manifest exists: the manifest is written last, after every output
file has been renamed into place, so a run that is killed leaves either a finished series
or one that the next run redoes.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import DicomArrayError
from .paths import inside, series_folders, short_hash
from .staging import Stage, stage, staged

logger = logging.getLogger(__name__)

#: Formats :func:`convert` can write, and the file each one makes in a series folder.
FORMATS: dict[str, str] = {
    "zarr": "image.zarr",
    "npy": "image.npy",
    "nifti": "image.nii.gz",
    "jpg": "middle.jpg",
    "orthogonal": "orthogonal.jpg",
    "montage": "montage.jpg",
}
SIDECAR = "image.json"
MANIFEST = "manifest.json"
REPORT_COLUMNS = (
    "SeriesInstanceUID",
    "PatientID",
    "status",
    "error",
    "outputs",
    "slices",
    "spacing_mm",
    "seconds",
)


@dataclass(frozen=True)
class SeriesJob:
    """What one task needs: the files of a series, where to write, and how."""

    uid: str
    patient_id: str
    files: tuple[str, ...]
    out_root: str
    out_dir: str
    formats: tuple[str, ...]
    deidentify: bool
    overwrite: bool
    #: dask scheduler for the series' own computations: "synchronous" on a cluster
    #: worker (one task per worker process, and no nested tasks sent back to the
    #: scheduler); None keeps the current one.
    scheduler: str | None = None


def convert(
    root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    config: Mapping[str, Any] | str | os.PathLike[str] | None = None,
    formats: Sequence[str] = ("zarr", "npy", "jpg"),
    client: Any = None,
    workers: int | None = None,
    deidentify: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """Convert every selected series under ``root`` into ``out_dir/<patient>/<study>/<series>/``.

    Parameters
    ----------
    root : str or os.PathLike
        A study tree; indexed with :func:`dicomarray.scan` (headers only).
    out_dir : str or os.PathLike
        Where outputs go. Nothing is ever written outside it, whatever the tags say.
    config : dict or path of a JSON file, optional
        Rules as in :func:`dicomarray.dicom_filter`; default: every image series.
    formats : sequence of str, default ("zarr", "npy", "jpg")
        Any of ``zarr``, ``npy``, ``nifti``, ``jpg`` (the middle slice), ``orthogonal``
        (axial, coronal and sagittal side by side) and ``montage`` (a grid of axial
        slices). A JSON sidecar is always written.
        Volumes are exported in modality values (HU for CT), float32.
    client : distributed.Client, optional
        Run on this cluster. Without one, a local cluster with ``workers`` processes is
        started (and closed); ``workers=0`` runs in this process on dask's threaded
        scheduler.
    workers : int, optional
        Worker processes of the local cluster; default: the number of CPUs.
    deidentify : bool, default False
        Leave patient-identifying attributes out of every output and make folder names
        from hashes of the patient and study instead of their IDs.
    overwrite : bool, default False
        Redo series whose outputs are complete; by default they are ``skipped``.
    progress : bool, default True
        A progress line over series on stderr (and the dashboard link of a cluster).

    Returns
    -------
    pandas.DataFrame
        One row per series: SeriesInstanceUID, PatientID, status (``ok``, ``failed``,
        ``skipped``), error, outputs, slices, spacing_mm, seconds. Also written to
        ``out_dir/report.csv``.
    """
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise DicomArrayError(f"unknown formats {unknown}; choose from {sorted(FORMATS)}")
    out = Path(out_dir)
    _check_outside_input(Path(root), out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = plan_jobs(root, out, config, tuple(formats), deidentify, overwrite)
    rows = _run(jobs, client, workers, progress)
    report = pd.DataFrame.from_records(rows, columns=list(REPORT_COLUMNS))
    _write_report(report, out / "report.csv")
    return report


def _check_outside_input(root: Path, out: Path) -> None:
    """Outputs never go into the input tree: the inputs stay as they were."""
    source, target = root.resolve(), out.resolve()
    if root.is_dir() and (target == source or source in target.parents):
        raise DicomArrayError(
            f"{out}: the output folder is inside the input tree {root}; choose one outside it"
        )


def plan_jobs(
    root: str | os.PathLike[str],
    out: Path,
    config: Mapping[str, Any] | str | os.PathLike[str] | None,
    formats: tuple[str, ...],
    deidentify: bool,
    overwrite: bool,
) -> list[SeriesJob]:
    """One job per selected series, each with its own safe output folder."""
    from .query import dicom_filter

    taken: set[str] = set()
    jobs = []
    for series in dicom_filter(root, config or {}):
        relative = "/".join(series_folders(series.meta, deidentify=deidentify))
        folder = _unique(relative, series.uid, taken, out)
        target = out.absolute() / folder  # checked against symlinks when written
        jobs.append(
            SeriesJob(
                uid=series.uid,
                patient_id=_reported_patient(series.meta, deidentify),
                files=series.files,
                out_root=str(out.absolute()),
                out_dir=str(target),
                formats=formats,
                deidentify=deidentify,
                overwrite=overwrite,
            )
        )
    return jobs


def _reported_patient(meta: Mapping[str, Any], deidentify: bool) -> str:
    """The patient as the report shows it: the PatientID, or its hash when de-identifying."""
    return (
        series_folders(meta, deidentify=True)[0] if deidentify else str(meta.get("PatientID", ""))
    )


def _unique(folder: str, uid: str, taken: set[str], out: Path) -> str:
    """The folder, or the folder with a short hash of the UID when another series has it.

    Another series has it when this run gave it to one already, or when the folder on disk
    holds another series' outputs (from an earlier run with a different selection).
    """
    owner = read_manifest(out / folder)
    if folder in taken or (owner is not None and owner["SeriesInstanceUID"] != uid):
        folder = f"{folder}-{short_hash(uid)}"
    taken.add(folder)
    return folder


def _run(
    jobs: list[SeriesJob], client: Any, workers: int | None, progress: bool
) -> list[dict[str, Any]]:
    if not jobs:
        return []
    if client is None and workers == 0:
        return _run_threaded(jobs, progress)
    if client is not None:
        return _run_on(client, jobs, progress)
    from distributed import Client, LocalCluster

    n_workers = workers or os.cpu_count() or 1
    with (
        LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True) as cluster,
        Client(cluster) as local,
    ):
        return _run_on(local, jobs, progress)


def _run_threaded(jobs: list[SeriesJob], progress: bool) -> list[dict[str, Any]]:
    import dask

    tasks = [dask.delayed(convert_series, pure=False)(job) for job in jobs]
    rows = list(dask.compute(*tasks, scheduler="threads"))
    if progress:
        _show_progress(len(rows), len(rows))
    return rows


def _run_on(client: Any, jobs: list[SeriesJob], progress: bool) -> list[dict[str, Any]]:
    from distributed import as_completed

    if progress:
        print(f"dask dashboard: {client.dashboard_link}", file=sys.stderr)
    jobs = [replace(job, scheduler="synchronous") for job in jobs]
    futures = client.map(convert_series, jobs, pure=False)
    done = 0
    for _future in as_completed(futures):
        done += 1
        if progress:
            _show_progress(done, len(futures))
    return client.gather(futures)


def _show_progress(done: int, total: int) -> None:
    end = "\n" if done == total else ""
    print(f"\rseries {done}/{total}", end=end, file=sys.stderr, flush=True)


def convert_series(job: SeriesJob) -> dict[str, Any]:
    """Convert one series; never raises: a failure is a row with status ``failed``."""
    started = time.perf_counter()
    row: dict[str, Any] = {
        "SeriesInstanceUID": job.uid,
        "PatientID": job.patient_id,
        "status": "ok",
        "error": "",
        "outputs": "",
        "slices": len(job.files),
        "spacing_mm": "",
        "seconds": 0.0,
    }
    try:
        # a symlink under the output folder must not lead writes elsewhere
        folder = inside(job.out_root, job.out_dir)
        manifest = read_manifest(folder, job.uid)
        if manifest is not None and not job.overwrite:
            row.update(status="skipped", outputs=";".join(manifest["outputs"]))
        else:
            outputs, volume = _write_outputs(job, folder)
            row.update(
                outputs=";".join(outputs), slices=volume.sizes["z"], spacing_mm=_spacing(volume)
            )
    except Exception as exc:  # noqa: BLE001 - one failed series must not stop the others
        error = f"{type(exc).__name__}: {exc}"
        row.update(status="failed", error=_without_folders(error, job) if job.deidentify else error)
        logger.warning("series %s failed: %s", job.uid, exc)
        logger.debug("%s", traceback.format_exc())
    row["seconds"] = round(time.perf_counter() - started, 3)
    return row


def _spacing(volume: Any) -> str:
    """Slice spacing x row spacing x column spacing in mm, for the report."""
    slice_spacing = volume.attrs.get("dicomarray_assembly", {}).get("slice_spacing")
    pixel = volume.attrs.get("PixelSpacing") or [None, None]
    return " x ".join("-" if v is None else f"{float(v):.3g}" for v in (slice_spacing, *pixel))


def _write_outputs(job: SeriesJob, folder: Path) -> tuple[list[str], Any]:
    """Write into a partial folder, then publish it in one rename (:mod:`.staging`).

    A series folder therefore only ever appears complete, even when two runs write
    into the same output folder at once or a run is killed half way. When a concurrent
    run has published this series' complete folder meanwhile, its outputs stand (unless
    ``overwrite``) and ours are discarded.
    """
    import dask

    from .volume import open_series

    replaceable = functools.partial(_is_replaceable, uid=job.uid)
    output = stage(
        folder, overwrite=True, folder=True, replaceable=replaceable, kind="dicomarray series"
    )
    inside(job.out_root, folder.parent)  # again, now that the parents exist
    try:
        output.partial.mkdir()
        setting = dask.config.set(scheduler=job.scheduler) if job.scheduler else nullcontext()
        with setting:
            volume = open_series(list(job.files), job.uid)
            values = volume.dicom.hu()
            outputs = [SIDECAR]
            if "npy" not in job.formats:  # the npy writer writes the same sidecar
                _WRITERS["sidecar"](values, output.partial / SIDECAR, job.deidentify)
            for name in job.formats:
                _WRITERS[name](values, output.partial / FORMATS[name], job.deidentify)
                outputs.append(FORMATS[name])
        write_manifest(output.partial, job, outputs)
        if job.overwrite or read_manifest(folder, job.uid) is None:
            _publish(output, job.uid)
    finally:
        output.discard()
    return outputs, volume


def _is_replaceable(folder: Path, uid: str) -> bool:
    """Only an empty folder or this series' own outputs may be replaced: nothing else is lost."""
    if read_manifest(folder, uid) is not None:
        return True
    return folder.is_dir() and not any(folder.iterdir())


def _publish(output: Stage, uid: str) -> None:
    """Publish, unless a concurrent run has just put this series' complete folder in place."""
    try:
        output.publish()
    except OSError:  # the rename lost the race to a concurrent run's
        if read_manifest(output.final, uid) is None:
            raise


def _without_folders(message: str, job: SeriesJob) -> str:
    """An error message without the folders of its paths: folder names may name patients."""
    folders = {str(Path(f).parent) for f in job.files} | {job.out_dir, job.out_root}
    for folder in sorted(folders, key=len, reverse=True):
        message = message.replace(folder + os.sep, "").replace(folder, "<folder>")
    return message


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


def write_manifest(folder: Path, job: SeriesJob, outputs: Iterable[str]) -> None:
    """Written last into the partial folder: its presence means the series is complete."""
    record = {
        "SeriesInstanceUID": job.uid,
        "outputs": list(outputs),
        "formats": list(job.formats),
        "deidentify": job.deidentify,
        "files": len(job.files),
    }
    (folder / MANIFEST).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


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


def _sidecar(volume: Any, path: Path, deidentify: bool) -> None:
    from .writers.metadata import write_sidecar

    write_sidecar(volume, path, deidentify=deidentify)


_WRITERS: dict[str, Callable[[Any, Path, bool], Any]] = {
    "sidecar": _sidecar,
    "zarr": lambda v, p, d: v.dicom.to_zarr(p, deidentify=d),
    "npy": lambda v, p, d: v.dicom.to_npy(p, json_path=p.parent / SIDECAR, deidentify=d),
    "nifti": lambda v, p, d: v.dicom.to_nifti(p),
    "jpg": lambda v, p, d: v.dicom.to_jpg(p),
    "orthogonal": lambda v, p, d: v.dicom.orthogonal(p),
    "montage": lambda v, p, d: v.dicom.montage(p),
}
