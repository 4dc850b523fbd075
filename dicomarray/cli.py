"""The ``dicomarray`` command.

``main(argv=None)`` returns the exit code, so tests call it directly as well as in a
subprocess: 0 on success, 1 when some of the work failed, 2 on bad usage. Errors are one
line on stderr; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import DicomArrayError

logger = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING, format="%(message)s"
    )
    if not args.debug:
        warnings.simplefilter("ignore")  # data warnings are logged once by the library already
    from .query import RuleError

    try:
        return int(args.run(args))
    except (DicomArrayError, OSError) as exc:
        if args.debug:
            raise
        print(f"dicomarray: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, RuleError) else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dicomarray", description="DICOM study trees as lazy, labelled volumes."
    )
    parser.add_argument("--debug", action="store_true", help="log details and show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="the main job: convert the sample brain CT study (or --data) to zarr, npy, pictures",
    )
    demo.add_argument(
        "--out", "--output", type=Path, default=Path("output"), help="output folder (./output)"
    )
    demo.add_argument("--data", type=Path, help="a study tree to use instead of the sample")
    demo.add_argument("--patients", type=int, default=10, help="sample patients (default 10)")
    demo.add_argument(
        "--workers", type=int, default=0, help="worker processes (default 0: threads here)"
    )
    demo.set_defaults(run=_run_demo)

    scan = commands.add_parser("scan", help="index every DICOM file under ROOT")
    scan.add_argument("root", type=Path)
    scan.add_argument("--out", type=Path, help="write the index to .csv or .parquet")
    scan.set_defaults(run=_run_scan)

    series = commands.add_parser("series", help="one line per series under ROOT")
    series.add_argument("root", type=Path)
    series.set_defaults(run=_run_series)

    info = commands.add_parser("info", help="one series' shape, geometry, tags and warnings")
    info.add_argument("path", type=Path, help="a series folder, or one file")
    info.add_argument("--series-uid", help="the series to describe when PATH holds several")
    info.set_defaults(run=_run_info)

    filter_ = commands.add_parser("filter", help="series under ROOT matching a JSON config")
    filter_.add_argument("root", type=Path)
    filter_.add_argument("--config", type=Path, required=True, help="JSON file of tag rules")
    filter_.add_argument("--json", action="store_true", help="print the matches as JSON")
    filter_.set_defaults(run=_run_filter)

    to_npy = commands.add_parser("to-npy", help="one series as an HU .npy and a JSON sidecar")
    to_npy.add_argument("-i", "--input-dicom", type=Path, required=True, help="series folder")
    to_npy.add_argument("-n", "--output-npy", type=Path, required=True, help=".npy to write")
    to_npy.add_argument("-j", "--output-json", type=Path, required=True, help="sidecar to write")
    to_npy.add_argument("--raw", action="store_true", help="stored values instead of HU")
    to_npy.add_argument("--deidentify", action="store_true", help="leave out patient identifiers")
    to_npy.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    to_npy.set_defaults(run=_run_to_npy)

    to_dicom = commands.add_parser(
        "to-dicom", help="a .npy volume as a new DICOM series over a template series"
    )
    to_dicom.add_argument("-n", "--input-npy", type=Path, required=True, help="(z, y, x) .npy")
    to_dicom.add_argument("-d", "--input-dicom", type=Path, required=True, help="template series")
    to_dicom.add_argument("-o", "--output-dicom", type=Path, required=True, help="output folder")
    to_dicom.add_argument("--description", help="SeriesDescription of the new series")
    to_dicom.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    to_dicom.set_defaults(run=_run_to_dicom)

    to_zarr = commands.add_parser("to-zarr", help="one series as an HU zarr store")
    to_zarr.add_argument("-i", "--input-dicom", type=Path, required=True, help="series folder")
    to_zarr.add_argument("-o", "--output", required=True, help="zarr store (path or URL)")
    to_zarr.add_argument("--raw", action="store_true", help="stored values instead of HU")
    to_zarr.add_argument("--deidentify", action="store_true", help="leave out patient identifiers")
    to_zarr.add_argument("--overwrite", action="store_true", help="replace an existing store")
    to_zarr.set_defaults(run=_run_to_zarr)

    render = commands.add_parser("render", help="a picture of one slice, or a montage")
    render.add_argument("-i", "--input-dicom", type=Path, required=True, help="series folder")
    render.add_argument("-o", "--output", type=Path, required=True, help=".jpg or .png")
    render.add_argument("--axis", choices=("axial", "coronal", "sagittal"), default="axial")
    render.add_argument("--index", type=int, help="slice index along the axis (middle)")
    render.add_argument("--preset", help="window preset: brain, subdural, stroke, bone, ...")
    render.add_argument("--center", type=float, help="window center (HU)")
    render.add_argument("--width", type=float, help="window width (HU)")
    render.add_argument("--montage", action="store_true", help="a grid of axial slices")
    render.set_defaults(run=_run_render)

    batch = commands.add_parser("batch", help="convert every selected series under ROOT into OUT")
    batch.add_argument("root", type=Path)
    batch.add_argument("out", type=Path)
    batch.add_argument("--config", type=Path, help="JSON file of tag rules selecting series")
    batch.add_argument(
        "--format", default="zarr,npy,jpg", help="comma-separated: zarr,npy,nifti,jpg"
    )
    where = batch.add_mutually_exclusive_group()
    where.add_argument("--scheduler", help="address of a running dask scheduler (tcp://host:8786)")
    where.add_argument(
        "--workers", type=int, help="local worker processes (0: threads in this process)"
    )
    batch.add_argument("--deidentify", action="store_true", help="leave out patient identifiers")
    batch.add_argument("--overwrite", action="store_true", help="redo series already complete")
    batch.set_defaults(run=_run_batch)
    return parser


def _run_demo(args: argparse.Namespace) -> int:
    import time

    from .demo import run_demo, summary_table

    started = time.perf_counter()
    report = run_demo(
        args.out,
        data=args.data,
        n_patients=args.patients,
        workers=args.workers,
        progress=sys.stderr.isatty(),
    )
    print(summary_table(report))
    failed = int((report["status"] == "failed").sum())
    print(
        f"{len(report)} series of {report['PatientID'].nunique()} patients in "
        f"{time.perf_counter() - started:.1f} s, {failed} failed; outputs in {args.out}"
    )
    return 1 if failed else 0


def _run_scan(args: argparse.Namespace) -> int:
    from .index import scan

    index = scan(args.root, progress=sys.stderr.isatty())
    if args.out:
        table = index.astype(str)
        if args.out.suffix == ".parquet":
            table.to_parquet(args.out)
        else:
            table.to_csv(args.out, index=False)
    print(
        f"{len(index)} DICOM instances, {index['SeriesInstanceUID'].nunique()} series, "
        f"{len(index.attrs['skipped'])} files skipped"
    )
    return 0


def _run_series(args: argparse.Namespace) -> int:
    from .query import list_series

    table = list_series(args.root)
    if table.empty:
        print("no DICOM series found")
        return 0
    shown = table.drop(columns=["StudyInstanceUID", "SeriesInstanceUID"])
    print(shown.to_string(index=False, max_colwidth=32))
    return 0


def _run_info(args: argparse.Namespace) -> int:
    import warnings as warnings_module

    from .volume import ASSEMBLY_ATTR, open_series

    with warnings_module.catch_warnings(record=True):
        warnings_module.simplefilter("always")
        volume = open_series(args.path, args.series_uid)
    report = volume.attrs[ASSEMBLY_ATTR]
    spacing = (report["slice_spacing"], *volume.attrs.get("PixelSpacing", [None, None]))
    lines = [
        f"series      {report['series_uid']}",
        f"shape       {dict(volume.sizes)}  dtype {volume.dtype}",
        f"spacing     z {spacing[0]} mm, y {spacing[1]} mm, x {spacing[2]} mm",
        f"z range     {float(volume.z[0]):.2f} .. {float(volume.z[-1]):.2f} mm "
        f"(sorted by {report['sorted_by']})",
        f"left out    {len(report['left_out'])} file(s)",
        *(f"warning     {w}" for w in report["warnings"]),
        "affine (z, y, x, 1) -> LPS mm:",
        *("    " + "  ".join(f"{v:9.3f}" for v in row) for row in volume.dicom.affine),
        "tags:",
    ]
    for keyword, value in volume.attrs.items():
        if keyword != ASSEMBLY_ATTR and not isinstance(value, list | dict):
            lines.append(f"    {keyword:32} {value}")
    print("\n".join(lines))
    return 0


def _run_filter(args: argparse.Namespace) -> int:
    import json

    from .query import dicom_filter

    found = dicom_filter(args.root, args.config)
    if args.json:
        records = [{"uid": s.uid, "files": list(s.files), "meta": s.meta} for s in found]
        print(json.dumps(records, indent=2))
    else:
        for series in found:
            meta = series.meta
            fields = (meta.get("PatientID", ""), meta.get("SeriesDescription", ""))
            print(f"{series.uid}\t{len(series.files)}\t{fields[0]}\t{fields[1]}")
    return 0


def _open_quietly(path: Path) -> Any:
    """The series at path; data warnings are logged by the library, not repeated here."""
    from .volume import open_series

    return open_series(path)


def _run_to_npy(args: argparse.Namespace) -> int:
    volume = _open_quietly(args.input_dicom)
    values = volume if args.raw else volume.dicom.hu()
    values.dicom.to_npy(
        args.output_npy,
        json_path=args.output_json,
        deidentify=args.deidentify,
        overwrite=args.overwrite,
    )
    print(f"{args.output_npy}: {dict(values.sizes)} {values.dtype}; metadata in {args.output_json}")
    return 0


def _run_to_dicom(args: argparse.Namespace) -> int:
    import numpy as np

    from .writers.dicom import to_dicom

    try:
        array = np.load(args.input_npy, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise DicomArrayError(f"{args.input_npy}: not a readable .npy file: {exc}") from exc
    paths = to_dicom(
        array,
        args.input_dicom,
        args.output_dicom,
        series_description=args.description,
        overwrite=args.overwrite,
    )
    print(f"{len(paths)} files written to {args.output_dicom}")
    return 0


def _run_to_zarr(args: argparse.Namespace) -> int:
    volume = _open_quietly(args.input_dicom)
    values = volume if args.raw else volume.dicom.hu()
    values.dicom.to_zarr(args.output, deidentify=args.deidentify, overwrite=args.overwrite)
    print(f"{args.output}: {dict(values.sizes)} {values.dtype}")
    return 0


def _run_render(args: argparse.Namespace) -> int:
    volume = _open_quietly(args.input_dicom)
    window = {"preset": args.preset, "center": args.center, "width": args.width}
    if args.montage:
        path = volume.dicom.montage(args.output, **window)
    else:
        path = volume.dicom.to_jpg(args.output, args.index, axis=args.axis, **window)
    print(path)
    return 0


def _run_batch(args: argparse.Namespace) -> int:
    from .batch import convert

    client = None
    if args.scheduler:
        from distributed import Client

        client = Client(args.scheduler)
    try:
        report = convert(
            args.root,
            args.out,
            config=args.config,
            formats=[f.strip() for f in args.format.split(",") if f.strip()],
            client=client,
            workers=args.workers,
            deidentify=args.deidentify,
            overwrite=args.overwrite,
            progress=sys.stderr.isatty(),
        )
    finally:
        if client is not None:
            client.close()
    counts = report["status"].value_counts().to_dict()
    print(", ".join(f"{counts.get(k, 0)} {k}" for k in ("ok", "skipped", "failed")))
    for row in report[report["status"] == "failed"].itertuples():
        print(f"failed: {row.SeriesInstanceUID}: {row.error}", file=sys.stderr)
    return 1 if counts.get("failed") else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
