"""The ``dicomarray`` command.

``main(argv=None)`` returns the exit code, so tests call it directly as well as in a
subprocess: 0 on success, 1 when some of the work failed, 2 on bad usage, 130 when
interrupted. Whatever goes wrong is one line on stderr, ``dicomarray: error: ...``, never a
traceback unless ``--debug`` is given (anywhere on the line). dicomarray's warnings are
printed once each as ``warning: <series>: <message>``, naming the series they are about
(number, description, folder); the library's log and dask's INFO messages only appear
with ``--debug``. Every command that writes refuses to replace an existing output unless
``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .batch import FORMATS, extra_dims
from .errors import DicomArrayError, DicomArrayWarning, WriteError

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

#: Loggers that are quiet below WARNING unless ``--debug``: dask.distributed's INFO lines
#: (cluster start, worker registration, connections) say nothing about the data.
CHATTY_LOGGERS = ("distributed", "tornado", "bokeh")
_EXIT_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after the program name; default ``sys.argv[1:]``.

    Returns
    -------
    int
        The process exit code: 0 success, 1 failure, 2 bad usage, 130 interrupted.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    with _Console(debug=args.debug, stream=sys.stderr) as console:
        try:
            return int(args.run(args, console))
        except KeyboardInterrupt:
            console.error("interrupted")
            return _EXIT_INTERRUPTED
        except SystemExit:
            raise
        except BaseException as exc:  # noqa: BLE001 - one line, even for a decoder's panic
            if args.debug:
                raise
            console.error(_cli_wording(_one_line(exc), args.flags))
            from .query import RuleError

            return 2 if isinstance(exc, RuleError) else 1


# --------------------------------------------------------------------------------------------
# What a run shows on stderr
# --------------------------------------------------------------------------------------------


class _Console:
    """stderr for one run: warnings once each with their series, logs only with ``--debug``.

    Warnings are collected while the command runs and printed when it ends (or fails),
    each distinct message once, prefixed with the series it is about: the command names
    the series with :meth:`about` once it has opened it, so that a warning raised while
    opening is labelled too. Logging, warning filters and logger levels are restored on
    exit, so that ``main`` can be called again in the same process.
    """

    def __init__(self, *, debug: bool, stream: TextIO) -> None:
        self.debug = debug
        self.stream = stream
        self.subject = ""
        self._shown: set[str] = set()
        self._listed: set[str] = set()
        self._recorded: list[warnings.WarningMessage] = []

    def __enter__(self) -> _Console:
        self._catcher = warnings.catch_warnings(record=True)
        self._recorded = self._catcher.__enter__()
        warnings.simplefilter("always")  # counted once each here, not once per code line
        self._handler = logging.StreamHandler(self.stream)
        self._handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        if not self.debug:
            self._handler.setLevel(logging.WARNING)
            # the library's warnings reach the user through the warnings channel, labelled
            self._handler.addFilter(lambda record: not _is_dicomarray_below_error(record))
        root = logging.getLogger()
        self._saved_levels = {
            name: logging.getLogger(name).level for name in ("", "dicomarray", *CHATTY_LOGGERS)
        }
        root.addHandler(self._handler)
        root.setLevel(logging.DEBUG if self.debug else logging.WARNING)
        logging.getLogger("dicomarray").setLevel(logging.DEBUG if self.debug else logging.INFO)
        for name in CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.INFO if self.debug else logging.WARNING)
        self._saved_env = os.environ.get("DASK_LOGGING__DISTRIBUTED")
        # worker processes configure their own logging from the environment they inherit
        os.environ["DASK_LOGGING__DISTRIBUTED"] = "info" if self.debug else "warning"
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.flush()
        self._catcher.__exit__(None, None, None)
        logging.getLogger().removeHandler(self._handler)
        for name, level in self._saved_levels.items():
            logging.getLogger(name).setLevel(level)
        if self._saved_env is None:
            os.environ.pop("DASK_LOGGING__DISTRIBUTED", None)
        else:
            os.environ["DASK_LOGGING__DISTRIBUTED"] = self._saved_env

    def about(self, subject: str) -> None:
        """Name what the warnings collected so far, and from now on, are about."""
        self.subject = subject

    def warn(self, message: str, subject: str | None = None) -> None:
        """Print one warning line, unless the same one was printed already."""
        where = subject if subject is not None else self.subject
        line = f"warning: {where}: {message}" if where else f"warning: {message}"
        if line not in self._shown:
            self._shown.add(line)
            print(line, file=self.stream)

    def listed(self, messages: Sequence[str]) -> None:
        """Messages the command prints itself: not printed again as warnings."""
        self._listed.update(str(m) for m in messages)

    def flush(self) -> None:
        """Print the warnings collected so far; third-party ones only with ``--debug``."""
        recorded, self._recorded[:] = list(self._recorded), []
        for caught in recorded:
            if str(caught.message) in self._listed:
                continue
            if issubclass(caught.category, DicomArrayWarning):
                self.warn(str(caught.message))
            elif self.debug:
                self.warn(f"{caught.category.__name__}: {caught.message} ({caught.filename})")

    def error(self, message: str) -> None:
        """Print the warnings so far, then the one error line."""
        self.flush()
        print(f"dicomarray: error: {message}", file=self.stream)


def _is_dicomarray_below_error(record: logging.LogRecord) -> bool:
    return record.name.split(".")[0] == "dicomarray" and record.levelno < logging.ERROR


def _one_line(exc: BaseException) -> str:
    """The exception as one line; the type too when it is not one of ours."""
    text = " ".join(str(exc).split())
    if isinstance(exc, DicomArrayError | OSError):
        return text
    return f"unexpected {type(exc).__name__}: {text} (rerun with --debug for the traceback)"


def _cli_wording(message: str, flags: frozenset[str]) -> str:
    """A library message with its Python keywords as this command's flags.

    ``pass overwrite=True`` becomes ``pass --overwrite``, ``series_uid=...`` becomes
    ``--series-uid ...`` and ``pass series_uid`` becomes ``pass --series-uid``, for the
    keywords the command has a flag for. A bare word is a keyword only after "pass", so
    that prose ("cannot overwrite") is left alone.
    """

    def flag(match: re.Match[str]) -> str:
        option = "--" + match["name"].replace("_", "-")
        if option not in flags or (match["eq"] is None and match["pass"] is None):
            return match.group(0)
        return (match["pass"] or "") + option + (" " if match["eq"] == "=" else "")

    keyword = r"(?P<pass>\bpass )?\b(?P<name>[a-z][a-z0-9_]*)(?P<eq>=True\b|=(?!=))?"
    return re.sub(keyword, flag, message)


def _series_label(volume: Any) -> str:
    """``series 2 "HEAD 5mm" (folder)``: how warnings name the series they are about."""
    from .volume import ASSEMBLY_ATTR

    attrs = volume.attrs
    files = (attrs.get(ASSEMBLY_ATTR) or {}).get("files") or []
    parts = ["series"]
    if attrs.get("SeriesNumber") is not None:
        parts.append(str(attrs["SeriesNumber"]))
    if attrs.get("SeriesDescription"):
        parts.append(f'"{attrs["SeriesDescription"]}"')
    if files:
        parts.append(f"({os.path.commonpath([os.path.dirname(str(f)) for f in files])})")
    return " ".join(parts)


# --------------------------------------------------------------------------------------------
# The parser
# --------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    # --debug on every subcommand too, so that it works anywhere on the line; SUPPRESS keeps
    # a subcommand from resetting a --debug given before it
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="log details (dask's too) and show tracebacks",
    )
    parser = argparse.ArgumentParser(
        prog="dicomarray", description="DICOM study trees as lazy, labelled volumes."
    )
    parser.add_argument("--debug", action="store_true", help="log details and show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help_text, parents=[common])

    demo = command(
        "demo", "the main job: convert the sample brain CT study (or --data) to zarr, npy, pictures"
    )
    demo.add_argument(
        "--out", "--output", type=Path, default=Path("output"), help="output folder (./output)"
    )
    demo.add_argument("--data", type=Path, help="a study tree to use instead of the sample")
    demo.add_argument("--patients", type=int, default=10, help="sample patients (default 10)")
    demo.add_argument(
        "--workers", type=int, default=0, help="worker processes (default 0: threads here)"
    )
    _overwrite_flag(demo, "redo series whose outputs are complete")
    demo.set_defaults(run=_run_demo)

    scan = command("scan", "index every DICOM file under ROOT")
    scan.add_argument("root", type=Path)
    scan.add_argument(
        "--out", type=Path, help="write the index to .csv or .parquet (the parquet extra)"
    )
    _overwrite_flag(scan, "replace an existing --out file")
    scan.set_defaults(run=_run_scan)

    series = command("series", "one line per series under ROOT")
    series.add_argument("root", type=Path)
    series.set_defaults(run=_run_series)

    info = command("info", "one series' shape, geometry, tags and warnings")
    info.add_argument("path", type=Path, help="a series folder, or one file")
    _series_flags(info)
    info.set_defaults(run=_run_info)

    filter_ = command("filter", "series under ROOT matching a JSON config")
    filter_.add_argument("root", type=Path)
    filter_.add_argument("--config", type=Path, required=True, help="JSON file of tag rules")
    filter_.add_argument("--json", action="store_true", help="print the matches as JSON")
    filter_.set_defaults(run=_run_filter)

    to_npy = command("to-npy", "one series as an HU .npy and a JSON sidecar")
    to_npy.add_argument("-i", "--input-dicom", type=Path, required=True, help="series folder")
    to_npy.add_argument("-n", "--output-npy", type=Path, required=True, help=".npy to write")
    to_npy.add_argument("-j", "--output-json", type=Path, required=True, help="sidecar to write")
    to_npy.add_argument("--raw", action="store_true", help="stored values instead of HU")
    to_npy.add_argument("--deidentify", action="store_true", help="leave out patient identifiers")
    _series_flags(to_npy)
    _overwrite_flag(to_npy, "replace existing outputs")
    to_npy.set_defaults(run=_run_to_npy)

    to_dicom = command("to-dicom", "a .npy volume as a new DICOM series over a template series")
    to_dicom.add_argument("-n", "--input-npy", type=Path, required=True, help="(z, y, x) .npy")
    to_dicom.add_argument(
        "-j",
        "--input-json",
        type=Path,
        help="the npy's sidecar from to-npy (default: the .json beside the .npy, if any)",
    )
    to_dicom.add_argument("-d", "--input-dicom", type=Path, required=True, help="template series")
    to_dicom.add_argument("-o", "--output-dicom", type=Path, required=True, help="output folder")
    to_dicom.add_argument(
        "--values",
        choices=("modality", "stored"),
        help="what an npy without a sidecar holds: modality values (HU), or stored pixel "
        "values (to-npy --raw); a sidecar says it itself",
    )
    to_dicom.add_argument("--description", help="SeriesDescription of the new series")
    _series_flags(to_dicom, "the template series when -d holds several")
    _overwrite_flag(to_dicom, "replace an existing output folder")
    to_dicom.set_defaults(run=_run_to_dicom)

    to_zarr = command("to-zarr", "one series as an HU zarr store")
    to_zarr.add_argument("-i", "--input-dicom", type=Path, required=True, help="series folder")
    to_zarr.add_argument("-o", "--output", required=True, help="zarr store (path or URL)")
    to_zarr.add_argument("--raw", action="store_true", help="stored values instead of HU")
    to_zarr.add_argument("--deidentify", action="store_true", help="leave out patient identifiers")
    _series_flags(to_zarr)
    _overwrite_flag(to_zarr, "replace an existing store")
    to_zarr.set_defaults(run=_run_to_zarr)

    render = command("render", "a picture of one slice, or a montage")
    render.add_argument("-i", "--input-dicom", type=Path, required=True, help="series folder")
    render.add_argument("-o", "--output", type=Path, required=True, help=".jpg or .png")
    render.add_argument("--axis", choices=("axial", "coronal", "sagittal"), default="axial")
    render.add_argument("--index", type=int, help="slice index along the axis (middle)")
    render.add_argument("--preset", help="window preset: brain, subdural, stroke, bone, ...")
    render.add_argument("--center", type=float, help="window center (HU)")
    render.add_argument("--width", type=float, help="window width (HU)")
    render.add_argument("--montage", action="store_true", help="a grid of axial slices")
    _annotate_flag(render, default=True)
    _series_flags(render)
    _overwrite_flag(render, "replace an existing picture")
    render.set_defaults(run=_run_render)

    batch = command("batch", "convert every selected series under ROOT into OUT")
    batch.add_argument("root", type=Path)
    batch.add_argument("out", type=Path)
    _annotate_flag(batch, default=False)
    batch.add_argument("--config", type=Path, help="JSON file of tag rules selecting series")
    batch.add_argument(
        "--format",
        default="zarr,npy,jpg",
        help=f"comma-separated, of {','.join(FORMATS)} (default zarr,npy,jpg)",
    )
    where = batch.add_mutually_exclusive_group()
    where.add_argument("--scheduler", help="address of a running dask scheduler (tcp://host:8786)")
    where.add_argument(
        "--workers", type=int, help="local worker processes (0: threads in this process)"
    )
    batch.add_argument("--deidentify", action="store_true", help="leave out patient identifiers")
    _overwrite_flag(batch, "redo series whose outputs are complete")
    batch.set_defaults(run=_run_batch)

    for sub in commands.choices.values():
        # argparse keeps no public list of a parser's flags; error messages need them
        sub.set_defaults(flags=frozenset(s for a in sub._actions for s in a.option_strings))
    return parser


def _overwrite_flag(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--overwrite", action="store_true", help=help_text)


def _series_flags(
    parser: argparse.ArgumentParser, help_text: str = "the series to open when there are several"
) -> None:
    """Which series to open, and how its frames are assembled into volumes."""
    parser.add_argument("--series-uid", metavar="UID", help=help_text)
    parser.add_argument(
        "--split-by",
        metavar="KEYWORDS",
        type=_comma_separated,
        help="DICOM keywords that tell the volumes of an n-D series apart, comma-separated "
        "(EchoNumbers,ImageType); default: decided from the data",
    )
    parser.add_argument(
        "--dims",
        metavar="DIMS",
        type=_comma_separated,
        help="the dims to assemble before z, comma-separated (t, echo, diffusion, volume)",
    )


def _comma_separated(text: str) -> tuple[str, ...]:
    items = tuple(item.strip() for item in text.split(",") if item.strip())
    if not items:
        raise argparse.ArgumentTypeError("give at least one name, comma-separated")
    return items


#: The :func:`~dicomarray.volume.open_series` keywords that ``--split-by`` and ``--dims``
#: give: how the frames of an n-D series are split into volumes.
ASSEMBLY_OPTIONS = ("split_by", "dims")


def _assembly_options(args: argparse.Namespace) -> dict[str, Any]:
    """The assembly keywords given on the command line, for ``open_series``: only the
    flags given, so that without them a series opens as the data decides."""
    return {name: getattr(args, name) for name in ASSEMBLY_OPTIONS if getattr(args, name, None)}


# --------------------------------------------------------------------------------------------
# The commands
# --------------------------------------------------------------------------------------------


def _run_demo(args: argparse.Namespace, console: _Console) -> int:
    import time

    from .demo import run_demo, summary_table

    started = time.perf_counter()
    report = run_demo(
        args.out,
        data=args.data,
        n_patients=args.patients,
        workers=args.workers,
        progress=sys.stderr.isatty(),
        overwrite=args.overwrite,
    )
    print(summary_table(report))
    _report_warnings(report, args.out, console)
    failed = int((report["status"] == "failed").sum())
    print(
        f"{len(report)} series of {report['PatientID'].nunique()} patients in "
        f"{time.perf_counter() - started:.1f} s, {failed} failed; outputs in {args.out}"
    )
    return 1 if failed else 0


def _run_scan(args: argparse.Namespace, console: _Console) -> int:
    from .index import scan
    from .tables import check_index_target, write_index

    if args.out is not None:  # refused before the tree is walked, not after
        check_index_target(args.out, overwrite=args.overwrite)
    console.about(str(args.root))
    index = scan(args.root, progress=sys.stderr.isatty())
    for note in index.attrs.get("notes", []):  # warned or only logged: each shown once here
        console.warn(str(note))
    if args.out is not None:
        write_index(index, args.out, overwrite=args.overwrite)
    print(
        f"{len(index)} DICOM instances, {index['SeriesInstanceUID'].nunique()} series, "
        f"{len(index.attrs['skipped'])} files skipped"
    )
    return 0


def _run_series(args: argparse.Namespace, console: _Console) -> int:
    from .query import list_series
    from .tables import integers_as_integers

    table = list_series(args.root)
    if table.empty:
        print("no DICOM series found")
        return 0
    shown = integers_as_integers(table.drop(columns=["StudyInstanceUID"]))
    print(shown.to_string(index=False, max_colwidth=64))
    return 0


def _run_info(args: argparse.Namespace, console: _Console) -> int:
    from .volume import ASSEMBLY_ATTR

    volume = _open(args, args.path, console)
    report = volume.attrs[ASSEMBLY_ATTR]
    console.listed(report["warnings"])  # printed below; not repeated on stderr
    lines = [
        f"series      {report['series_uid']}",
        f"shape       {dict(volume.sizes)}  dtype {volume.dtype}",
        *_extra_dim_lines(volume, report),
        *_geometry_lines(volume),
        f"z range     {float(volume.z[0]):.2f} .. {float(volume.z[-1]):.2f} mm "
        f"(sorted by {report['sorted_by']})",
        f"left out    {_left_out(report['left_out'])}",
        *(f"warning     {w}" for w in report["warnings"]),
        "tags:",
    ]
    for keyword, value in volume.attrs.items():
        if keyword != ASSEMBLY_ATTR and not isinstance(value, list | dict):
            lines.append(f"    {keyword:32} {value}")
    print("\n".join(lines))
    return 0


def _extra_dim_lines(volume: Any, report: dict[str, Any]) -> list[str]:
    """One line per extra dim of an n-D series, for ``info``: its size, its coordinate's
    first and last values with their units, and the tags that split the frames along it
    (the assembly report's ``dims``). None for a 3-D series."""
    split_by = {
        entry.get("dim"): entry.get("split_by") or []
        for entry in report.get("dims") or []
        if isinstance(entry, dict)
    }
    lines = []
    for dim in extra_dims(volume):
        parts = [f"{volume.sizes[dim]} volumes"]
        if dim in volume.coords:
            parts.append(_coordinate_range(volume[dim]))
        if split_by.get(dim):
            parts.append(f"split by {', '.join(map(str, split_by[dim]))}")
        lines.append(f"{dim:11} {', '.join(parts)}")
    return lines


def _coordinate_range(coord: Any) -> str:
    """``0 .. 4 s``: a dim coordinate's first and last values, or its values if not numbers."""
    values = coord.values
    units = f" {coord.attrs['units']}" if coord.attrs.get("units") else ""
    if values.dtype.kind in "iuf":
        return f"{values[0]:.6g} .. {values[-1]:.6g}{units}"
    shown = ", ".join(map(str, values[:4]))
    return shown + (", ..." if len(values) > 4 else "")


def _geometry_lines(volume: Any) -> list[str]:
    """What :class:`~dicomarray.geometry.VolumeGeometry` says of the volume, for ``info``:
    spacing per dim (``z none`` when the slices have no one step), the steps in a sentence,
    the orientation code, the tilt and the affine."""
    from .geometry import VolumeGeometry

    geometry = VolumeGeometry.of(volume)
    irregular = not geometry.is_regular  # else a missing step is unknown: one slice
    spacing = ", ".join(
        f"{dim} none (no one step)" if mm is None and irregular else f"{dim} {_millimetres(mm)}"
        for dim, mm in geometry.spacing.items()
    )
    code = geometry.orientation_code()  # fastest axis (the last dim) first
    toward = ", ".join(f"{d} toward {c}" for d, c in zip(geometry.dims[::-1], code, strict=True))
    sheared = " (sheared: each slice offset in-plane)" if geometry.is_sheared else ""
    exact = "" if geometry.is_regular else " (z column: the mean step, exact at the ends only)"
    return [
        f"spacing     {spacing}",
        f"slices      {geometry.describe_steps()}",
        f"orientation {code} ({toward})",
        f"tilt        {geometry.tilt_degrees:.2f} degrees{sheared}",
        f"affine ({', '.join(geometry.dims)}, 1) -> LPS mm{exact}:",
        *("    " + "  ".join(f"{v:9.3f}" for v in row) for row in geometry.affine()),
    ]


def _millimetres(value: float | None) -> str:
    """A spacing for people: ``2.4 mm`` (6 significant digits); ``unknown`` when there is
    none (one slice along z)."""
    return "unknown" if value is None else f"{float(value):.6g} mm"


def _left_out(entries: list[dict[str, str]]) -> str:
    """``3 file(s)``, or ``75 frame(s) of 3 file(s)``: multi-frame files are listed by frame."""
    files = len({entry["path"] for entry in entries})
    if files == len(entries):
        return f"{files} file(s)"
    return f"{len(entries)} frame(s) of {files} file(s)"


def _run_filter(args: argparse.Namespace, console: _Console) -> int:
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


def _open(args: argparse.Namespace, path: Path, console: _Console) -> Any:
    """The series at ``path`` (``--series-uid`` among several); warnings then name it."""
    from .volume import open_series

    console.about(str(path))
    volume = open_series(path, args.series_uid, **_assembly_options(args))
    console.about(_series_label(volume))
    return volume


def _run_to_npy(args: argparse.Namespace, console: _Console) -> int:
    volume = _open(args, args.input_dicom, console)
    values = volume if args.raw else volume.dicom.hu()
    values.dicom.to_npy(
        args.output_npy,
        json_path=args.output_json,
        deidentify=args.deidentify,
        overwrite=args.overwrite,
    )
    print(f"{args.output_npy}: {dict(values.sizes)} {values.dtype}; metadata in {args.output_json}")
    return 0


def _run_to_dicom(args: argparse.Namespace, console: _Console) -> int:
    from .writers.dicom import to_dicom

    template = _open(args, args.input_dicom, console)
    paths = to_dicom(
        _npy_volume(args.input_npy, args.input_json, args.values),
        template,
        args.output_dicom,
        series_description=args.description,
        values=args.values,
        overwrite=args.overwrite,
    )
    print(f"{len(paths)} files written to {args.output_dicom}")
    return 0


def _npy_volume(npy: Path, sidecar: Path | None, values: str | None) -> Any:
    """The npy with its sidecar (which says what it holds and where it comes from).

    Without a sidecar nothing says whether the npy holds stored or modality values, so
    ``--values`` must.
    """
    from .writers.npy import memory_map_npy, open_npy

    beside = npy.with_suffix(".json")
    if sidecar is not None or beside.is_file():
        return open_npy(npy, json_path=sidecar or beside)
    if values is None:
        raise WriteError(
            f"{npy}: no sidecar ({beside.name}, or --input-json) says whether it holds "
            "stored or modality values; pass --values stored (to-npy --raw) or "
            "--values modality (HU)"
        )
    return memory_map_npy(npy)


def _run_to_zarr(args: argparse.Namespace, console: _Console) -> int:
    volume = _open(args, args.input_dicom, console)
    values = volume if args.raw else volume.dicom.hu()
    values.dicom.to_zarr(args.output, deidentify=args.deidentify, overwrite=args.overwrite)
    print(f"{args.output}: {dict(values.sizes)} {values.dtype}")
    return 0


def _run_render(args: argparse.Namespace, console: _Console) -> int:
    if args.output.exists() and not args.overwrite:  # refused before the series is read
        raise WriteError(f"{args.output} already exists; pass --overwrite to replace it")
    volume = _open(args, args.input_dicom, console)
    window = {
        "preset": args.preset,
        "center": args.center,
        "width": args.width,
        "overwrite": args.overwrite,
        "annotate": args.annotate,
    }
    if args.montage:
        path = volume.dicom.montage(args.output, **window)
    else:
        path = volume.dicom.to_jpg(args.output, args.index, axis=args.axis, **window)
    print(path)
    return 0


def _annotate_flag(parser: argparse.ArgumentParser, *, default: bool) -> None:
    parser.add_argument(
        "--annotate",
        action=argparse.BooleanOptionalAction,
        default=default,
        help="patient directions on the picture edges and the slice position in mm "
        f"(default: {'on' if default else 'off'})",
    )


def _run_batch(args: argparse.Namespace, console: _Console) -> int:
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
            annotate=args.annotate,
        )
    finally:
        if client is not None:
            client.close()
    _report_warnings(report, args.out, console)
    counts = report["status"].value_counts().to_dict()
    print(", ".join(f"{counts.get(k, 0)} {k}" for k in ("ok", "skipped", "failed")))
    for row in report[report["status"] == "failed"].itertuples():
        print(f"failed: {row.SeriesInstanceUID}: {row.error}", file=sys.stderr)
    return 1 if counts.get("failed") else 0


#: How a batch report's ``warnings`` cell separates the warnings of one series.
REPORT_WARNING_SEPARATOR = " | "


def _report_warnings(report: pd.DataFrame, out: Path, console: _Console) -> None:
    """The warnings a batch collected per series (its ``warnings`` column), once each."""
    if "warnings" not in report.columns:
        return
    for row in report.to_dict("records"):
        cell = row.get("warnings")
        if not isinstance(cell, str) or not cell.strip():
            continue
        for message in cell.split(REPORT_WARNING_SEPARATOR):
            console.warn(message.strip(), subject=_report_label(row, out))


def _report_label(row: dict[str, Any], out: Path) -> str:
    """``series (out/<patient>/<study>/<series>)``: a report row's series, by its folder."""
    folder = row.get("folder")
    if isinstance(folder, str) and folder:
        return f"series ({out / folder})"
    return f"series {row.get('SeriesInstanceUID')}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
