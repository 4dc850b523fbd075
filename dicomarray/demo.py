"""The main job, ``dicomarray demo``: a study tree from index to exports and pictures.

By default it runs on the built-in sample brain CT study, written once into a cache
folder. It indexes the tree, keeps the CT head series (no localizers), and converts each
one with :func:`dicomarray.batch.convert`: HU volumes as zarr and npy + JSON, a
middle-slice JPG in the brain window, an orthogonal view and a montage. The sample
study's first patient also has a CT perfusion series
(:mod:`dicomarray.sample_perfusion`): beside its exports, the demo draws the
time-attenuation curves of an artery and of white matter.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pandas as pd

from .errors import WriteError
from .staging import staged

#: Folders of the demo's outputs, per series, and what is in them.
DEMO_FORMATS = ("zarr", "npy", "jpg", "orthogonal", "montage")
#: Which series the demo converts.
DEMO_CONFIG = {"Modality": "CT", "is_localizer": False, "n_slices": {"min": 2}}
SAMPLE_VERSION = 2  # 2: with the perfusion series
#: The perfusion series' curves picture, in its output folder.
CURVES_PICTURE = "time_curves.png"
#: The regions of :data:`dicomarray.sample_perfusion.PERFUSION_REGIONS` it shows.
CURVES_REGIONS = ("artery", "white matter")


def run_demo(
    out: str | os.PathLike[str],
    *,
    data: str | os.PathLike[str] | None = None,
    n_patients: int = 10,
    workers: int = 0,
    progress: bool = False,
    overwrite: bool = False,
) -> pd.DataFrame:
    """Convert the CT head series of a study tree (default: the sample study) into ``out``.

    Parameters
    ----------
    out : str or os.PathLike
        Output folder: ``<patient>/<study>/<series>/`` with ``image.zarr``, ``image.npy``,
        ``image.json``, ``middle.jpg``, ``orthogonal.jpg`` and ``montage.jpg``, and
        ``report.csv``; for the sample study's perfusion series also
        :data:`CURVES_PICTURE`.
    data : str or os.PathLike, optional
        A study tree to use instead of the sample study.
    n_patients : int, default 10
        Patients in the sample study (ignored with ``data``).
    workers : int, default 0
        Worker processes; 0 converts in this process with threads.
    progress : bool, default False
        Show progress on stderr.
    overwrite : bool, default False
        Redo series whose outputs in ``out`` are complete; by default they are kept and
        reported ``skipped``, as in :func:`dicomarray.batch.convert`. Nothing else in
        ``out`` is ever replaced.

    Returns
    -------
    pandas.DataFrame
        The batch report, one row per series.
    """
    from .batch import convert

    study = Path(data) if data is not None else ensure_sample_study(n_patients=n_patients)
    report = convert(
        study,
        out,
        config=DEMO_CONFIG,
        formats=DEMO_FORMATS,
        workers=workers,
        progress=progress,
        overwrite=overwrite,
        annotate=True,  # pictures for people: directions and slice positions on them
    )
    if data is None:
        write_sample_curves(study, Path(out), report, overwrite=overwrite)
    return report


def write_sample_curves(
    study: Path, out: Path, report: pd.DataFrame, *, overwrite: bool = False
) -> Path | None:
    """Draw the sample perfusion series' curves (:data:`CURVES_REGIONS`) into its folder.

    Only the regions' voxels are read. A picture already there is kept unless
    `overwrite`; a study without the series, or a series that failed to convert, gives
    no picture (None).
    """
    from .curves import region_curve, write_curves_picture
    from .sample_perfusion import PERFUSION_REGIONS
    from .volume import open_series

    folder = next(study.glob("*/*/3_PERFUSION"), None)
    if folder is None:
        return None
    # dims (t, z, y, x); one time point per chunk, so that a region's voxels are read
    # holding one volume at a time, not the whole series
    volume = open_series(folder, chunks={"t": 1})
    row = report[report["SeriesInstanceUID"] == volume.attrs["SeriesInstanceUID"]]
    if row.empty or row["status"].iloc[0] == "failed":
        return None
    target = out / str(row["folder"].iloc[0]) / CURVES_PICTURE
    if target.exists() and not overwrite:
        return target
    curves = {
        name: region_curve(volume, **dataclasses.asdict(PERFUSION_REGIONS[name]))
        for name in CURVES_REGIONS
    }
    title = f"{volume.attrs.get('SeriesDescription', '')}: time-attenuation curves"
    return write_curves_picture(curves, target, title=title, overwrite=overwrite)


def sample_cache_dir() -> Path:
    """Where the sample study lives: ``$DICOMARRAY_CACHE``, else the user's cache folder."""
    if os.environ.get("DICOMARRAY_CACHE"):
        return Path(os.environ["DICOMARRAY_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dicomarray"


def ensure_sample_study(*, n_patients: int = 10, root: Path | None = None) -> Path:
    """The sample study, written once, staged (:mod:`dicomarray.staging`) into place."""
    from .sample import make_study

    root = root or sample_cache_dir() / f"sample-v{SAMPLE_VERSION}-{n_patients}-patients"
    if (root / "README.txt").is_file():
        return root
    try:
        with staged(root, overwrite=False, folder=True, kind="sample study") as output:
            make_study(output.partial, n_patients=n_patients, perfusion=True)
    except WriteError:
        if not (root / "README.txt").is_file():  # not just a concurrent demo that won
            raise
    return root


def summary_table(report: pd.DataFrame) -> str:
    """The report as a readable table: patient, status, slices, spacing, seconds."""
    if report.empty:
        return "no series converted"
    columns = ["PatientID", "status", "slices", "spacing_mm", "seconds", "error"]
    table = report[columns].rename(columns={"spacing_mm": "spacing (mm)", "seconds": "s"})
    return table.to_string(index=False)
