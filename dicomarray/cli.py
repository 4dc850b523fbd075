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
    try:
        return int(args.run(args))
    except (DicomArrayError, OSError) as exc:
        if args.debug:
            raise
        print(f"dicomarray: error: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dicomarray", description="DICOM study trees as lazy, labelled volumes."
    )
    parser.add_argument("--debug", action="store_true", help="log details and show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo", help="write the built-in sample brain CT study, index it, and picture each patient"
    )
    demo.add_argument(
        "--output", type=Path, default=Path("output"), help="output folder (default ./output)"
    )
    demo.add_argument(
        "--patients", type=int, default=10, help="number of sample patients (default 10)"
    )
    demo.set_defaults(run=_run_demo)

    scan = commands.add_parser("scan", help="index every DICOM file under ROOT")
    scan.add_argument("root", type=Path)
    scan.add_argument("--out", type=Path, help="write the index to .csv or .parquet")
    scan.set_defaults(run=_run_scan)
    return parser


def _run_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    pictures = run_demo(args.output, n_patients=args.patients)
    for picture in pictures:
        print(picture)
    return 0


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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
