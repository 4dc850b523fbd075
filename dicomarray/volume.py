"""Opening series as lazy, labelled xarray volumes, and whole studies as DataTrees."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from pydicom.dataset import Dataset

from .assembly import Assembly, assemble
from .attrs import (
    GEOMETRY_KEYWORDS,
    json_safe,
    plain_cells,
    series_attrs,
    slice_coordinate,
    snake_case,
    varying_keywords,
)
from .errors import DicomArrayError, InvalidDicomError, SeriesNotFoundError
from .geometry import POSITION_COORDS, SPACING_RTOL
from .header import INDEX_KEYWORDS, read_dataset
from .index import Source, as_index
from .labels import ASSEMBLY_ATTR
from .paths import series_folders
from .pixels import MAX_VOLUME_BYTES, FrameStack, PixelFormat, check_readable

logger = logging.getLogger(__name__)

#: Name of the DataArray (and of its variable in a Dataset).
VARIABLE_NAME = "image"
#: Default bytes per dask chunk, as decoded (a bit-packed pixel is one byte in memory);
#: chunks always hold whole slices.
CHUNK_BYTES = 16 * 2**20
_HEADER_ONLY_ATTRS = {"PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"}
#: (5200,9229) *Shared Functional Groups Sequence*: the per-frame one (5200,9230) follows it.
_FUNCTIONAL_GROUPS = 0x52009229

Chunks = int | str | tuple[Any, ...] | dict[str, Any] | None
#: The trailing dim of a colour series and its coordinate: values are RGB
CHANNEL_DIM = "channel"
CHANNELS = ("R", "G", "B")


def open_series(
    source: Source | pd.DataFrame,
    series_uid: str | None = None,
    *,
    chunks: Chunks = None,
    rtol: float = SPACING_RTOL,
    max_bytes: int = MAX_VOLUME_BYTES,
    split_by: Sequence[str] | None = None,
    dims: Sequence[str] | None = None,
) -> xr.DataArray:
    """Open one series as a lazy ``(z, y, x)`` volume of stored pixel values, with extra
    dims before them (``t``, ``echo``, ``diffusion``, ...) when its frames repeat slice
    positions.

    Parameters
    ----------
    source : str, os.PathLike, sequence of paths, or pandas.DataFrame
        A folder, a file, a list of files, or rows of a :func:`dicomarray.scan` index.
    series_uid : str, optional
        (0020,000E) *Series Instance UID* to open; default: the series with the most
        instances (a :class:`~dicomarray.errors.SeriesSelectionWarning` names the others;
        a tie for the most is refused).
    chunks : int, dict, tuple or "auto", optional
        Dask chunks. An int is slices per chunk; a dict may name any dim; the default
        holds about 16 MiB of whole slices per chunk (``z`` first, then whole volumes
        along the last extra dim).
    rtol : float, default 0.05
        Relative deviation from the median slice step that counts as uneven spacing.
    max_bytes : int, default 64 GiB
        Refuse, before reading anything, a series that declares more stored bytes.
    split_by : sequence of str, optional
        Tags that tell apart volumes over the same slices, each making one extra dim
        (``("EchoNumbers", "ImageType")``; a b-value and its gradient make one
        ``diffusion`` dim; ``"acquisition order"`` for the k-th frame at each position).
        Default: decided from the data (:mod:`dicomarray.split`), and recorded in
        ``attrs["dicomarray_assembly"]["dims"]``.
    dims : sequence of str, optional
        The extra dims wanted, e.g. ``("t",)`` or ``("echo", "t")``: only rules that make
        them are tried.

    Returns
    -------
    xarray.DataArray
        Dask-backed stored values (no rescale applied) with dims ``(*extra, "z", "y",
        "x")``, plus a trailing ``channel`` (``R``, ``G``, ``B``) for a colour series
        (RGB or YBR, converted to RGB). ``z`` is each slice's position along the slice
        normal in mm (ascending), ``y`` and ``x`` positions along the column and row
        directions in mm; every volume of an n-D series has the same slice positions.
        Extra dims: ``t`` (seconds from
        the first volume's first acquisition), ``echo`` (EchoTime, ms), ``diffusion``
        (with ``b_value`` and ``gradient_l/p/s`` coordinates), ``volume`` (only an order
        is known) or a tag's snake_case name (``image_type``). Tags that vary between
        frames (compared in every frame's header) are coordinates in snake_case over the
        dims they vary along, never attrs; ``source_file`` and ``frame`` name each frame's
        origin; tags common to the series are attrs by DICOM keyword;
        ``attrs["dicomarray_assembly"]`` is the assembly report, with ``varying_tags``.

    Raises
    ------
    AmbiguousSeriesError
        No ``series_uid``, and several series share the largest number of instances; the
        message lists each one's UID, number, description and folder.
    DicomArrayError
        A subclass naming the file and the problem: no series, a volume that cannot be
        assembled (frames repeating positions that no rule arranges as a full grid: the
        message lists the rules tried and what each gave), pixel data that is truncated,
        too large or needs a missing decoder.

    Warns
    -----
    GeometryWarning
        Uneven spacing, gantry tilt, frames left out (localizers, other orientations).
    """
    try:
        return _open_series(
            source,
            series_uid,
            chunks=chunks,
            rtol=rtol,
            max_bytes=max_bytes,
            split_by=split_by,
            dims=dims,
        )
    except DicomArrayError:
        raise
    except _DATA_ERRORS as exc:
        # last line of defence: a value no check foresaw still names the source
        raise InvalidDicomError(
            f"{_describe(source)}: cannot build a volume: {type(exc).__name__}: {exc}"
        ) from exc


#: Exceptions that malformed values can raise deep in numpy, pandas or pydicom.
_DATA_ERRORS = (
    KeyError,
    IndexError,
    TypeError,
    ValueError,
    AttributeError,
    OverflowError,
    RecursionError,
)


def _open_series(
    source: Source | pd.DataFrame,
    series_uid: str | None,
    *,
    chunks: Chunks,
    rtol: float,
    max_bytes: int,
    split_by: Sequence[str] | None,
    dims: Sequence[str] | None,
) -> xr.DataArray:
    index = as_index(source)
    if not (index["Rows"].notna() & index["Columns"].notna()).any():
        raise SeriesNotFoundError(
            f"{_describe(source)}: no DICOM image instances ({len(index)} other DICOM "
            f"instances{_skipped_summary(index.attrs.get('skipped', []))})"
        )
    assembly = assemble(index, series_uid, rtol=rtol, split_by=split_by, dims=dims)
    return volume_from_assembly(assembly, chunks=chunks, max_bytes=max_bytes)


def _skipped_summary(skipped: list[tuple[str, str]]) -> str:
    """``; N files skipped, e.g. PATH: REASON``: why a source held no image, by its files.

    Skipped files are not all non-DICOM (a DICOMDIR, a link not followed, a gzipped
    instance), so the first one is named with its reason from ``scan``.
    """
    if not skipped:
        return ""
    path, reason = skipped[0]
    files = "1 file skipped:" if len(skipped) == 1 else f"{len(skipped)} files skipped, e.g."
    return f"; {files} {path}: {reason}"


def _describe(source: Source | pd.DataFrame) -> str:
    if isinstance(source, str | os.PathLike):
        return str(source)
    if isinstance(source, pd.DataFrame):
        return f"index of {len(source)} rows"
    return f"{len(source)} files"


def volume_from_assembly(
    assembly: Assembly, *, chunks: Chunks = None, max_bytes: int = MAX_VOLUME_BYTES
) -> xr.DataArray:
    """The lazy DataArray of an :class:`~dicomarray.assembly.Assembly`."""
    from .lazy import lazy_frames  # deferred: dask.array takes 0.3 s to import

    frames = assembly.frames
    fmt = PixelFormat.from_row(frames.iloc[0])
    check_readable(frames, fmt, max_bytes=max_bytes)
    stack = FrameStack(frames, fmt, grid=assembly.shape)
    tags = _SeriesTags.of(frames)
    dims = _grid_dims(assembly)
    coords = _coords(assembly, tags)
    if fmt.samples > 1:
        coords[CHANNEL_DIM] = (CHANNEL_DIM, list(CHANNELS))
    return xr.DataArray(
        lazy_frames(stack, _chunking(chunks, fmt, assembly.shape, dims)),
        dims=(*dims, *_frame_dims(fmt)),
        coords=coords,
        attrs=_attrs(assembly, tags),
        name=VARIABLE_NAME,
    )


def _frame_dims(fmt: PixelFormat) -> tuple[str, ...]:
    """The dims of one frame: ``y``, ``x``, and a trailing ``channel`` for colour."""
    return ("y", "x") if fmt.samples == 1 else ("y", "x", CHANNEL_DIM)


def _grid_dims(assembly: Assembly) -> tuple[str, ...]:
    """The dims of the frame grid: the extra dims, then ``z``."""
    return (*(dim.name for dim in assembly.grid.dims), "z")


@dataclass(frozen=True)
class _SeriesTags:
    """What is common to a stack and what varies, decided once for its coords and attrs.

    Index tags are compared frame by frame (multi-frame files carry per-frame values);
    every other tag is compared between the headers of all the stack's files.
    """

    common: dict[str, Any]
    varying_index: list[str]
    varying_headers: dict[str, pd.Series]  # keyword -> value per frame

    @classmethod
    def of(cls, frames: pd.DataFrame) -> _SeriesTags:
        paths = list(dict.fromkeys(frames["path"]))
        multi_frame = set(frames.loc[frames["frame"] > 0, "path"])
        headers = [_read_header(path, path in multi_frame) for path in paths]
        common, varying = series_attrs(
            headers, decided_elsewhere={*INDEX_KEYWORDS, *_HEADER_ONLY_ATTRS}
        )
        for keyword in _HEADER_ONLY_ATTRS:
            common.pop(keyword, None)
        per_frame = {
            keyword: frames["path"].map(dict(zip(paths, values, strict=True)))
            for keyword, values in varying.items()
        }
        return cls(common, varying_keywords(frames), per_frame)

    @property
    def varying(self) -> list[str]:
        """Every tag whose value is not the same on every slice, sorted."""
        return sorted({*self.varying_index, *self.varying_headers})


def _read_header(path: str, multi_frame: bool = False) -> Dataset:
    """One file's header, within the package's header limits.

    A multi-frame file's header is read up to its functional groups: frames.py read
    what they hold for the index columns, and pydicom would spend most of the time an
    enhanced series takes to open building a data set of every frame's items (1.2 s of
    1.3 s for 240 frames). Elements after them (overlays, waveforms) are then no attrs.
    """
    try:
        if multi_frame:
            return read_dataset(path, stop_before_tag=_FUNCTIONAL_GROUPS)
        return read_dataset(path, stop_before_pixels=True)
    except DicomArrayError:
        raise
    except Exception as exc:  # noqa: BLE001 - a file the index read must still parse
        raise InvalidDicomError(
            f"{path}: cannot read the header: {type(exc).__name__}: {exc}"
        ) from exc


def _is_sequence_value(values: pd.Series) -> bool:
    return any(
        isinstance(v, dict) or (isinstance(v, list) and v and isinstance(v[0], dict))
        for v in values
    )


def _chunking(
    chunks: Chunks, fmt: PixelFormat, grid: tuple[int, ...], dims: tuple[str, ...]
) -> Any:
    """Dask chunks over ``(*grid, rows, columns)``: whole slices, ``z`` filled first."""
    if chunks is None:
        return _default_chunks(fmt, grid)
    if isinstance(chunks, int):
        if chunks < 1:
            raise DicomArrayError(f"chunks must be a positive number of slices, got {chunks}")
        return (*(1,) * (len(grid) - 1), chunks, *fmt.frame_shape)
    if isinstance(chunks, dict):
        names = (*dims, *_frame_dims(fmt))
        unknown = set(chunks) - set(names)
        if unknown:
            raise DicomArrayError(
                f"chunks names unknown dims {sorted(unknown)}; dims are {', '.join(names)}"
            )
        default = dict(zip(names, _default_chunks(fmt, grid), strict=True))
        return tuple(chunks.get(dim, default[dim]) for dim in names)
    return chunks


def _default_chunks(fmt: PixelFormat, grid: tuple[int, ...]) -> tuple[int, ...]:
    """About :data:`CHUNK_BYTES` of whole slices: ``z`` first, then whole volumes along
    the last extra dim."""
    n_slices = grid[-1]
    per_chunk = max(1, min(n_slices, CHUNK_BYTES // fmt.array_frame_bytes))
    outer = [1] * (len(grid) - 1)
    if outer and per_chunk == n_slices:
        outer[-1] = max(1, min(grid[-2], CHUNK_BYTES // (n_slices * fmt.array_frame_bytes)))
    return (*outer, per_chunk, *fmt.frame_shape)


_SOURCE = {"long_name": "file the slice was read from"}
_FRAME = {"long_name": "frame of that file (0 for single-frame files)"}


def _coords(assembly: Assembly, tags: _SeriesTags) -> dict[str, Any]:
    geometry, frames = assembly.geometry, assembly.frames
    mm = {"units": "mm"}
    coords: dict[str, Any] = {
        "z": ("z", geometry.z, {**mm, "long_name": "position along the slice normal"}),
        # origin: where row (column) 0 of the source series lies, so that selections keep
        # a correct affine
        "y": (
            "y",
            geometry.y,
            {
                **mm,
                "long_name": "position along the column direction",
                "origin": float(geometry.y[0]),
            },
        ),
        "x": (
            "x",
            geometry.x,
            {**mm, "long_name": "position along the row direction", "origin": float(geometry.x[0])},
        ),
    }
    if assembly.report["sorted_by"] != "ImagePositionPatient":
        coords["z"][2]["units"] = "mm" if assembly.report["sorted_by"] == "SliceLocation" else "1"
    if geometry.has_positions:
        for axis, name in enumerate(POSITION_COORDS):
            coords[name] = ("z", geometry.positions[:, axis], mm)
    grid = _grid_dims(assembly)
    for dim in assembly.grid.dims:
        for name, (values, attrs) in dim.coords.items():
            coords[name] = (dim.name, values, attrs)
    split = {key: dim.name for dim in assembly.grid.dims for key in dim.split_by}
    varying = {k: frames[k] for k in tags.varying_index if k not in GEOMETRY_KEYWORDS}
    # a varying sequence is no coordinate: it is left out of attrs and named in the report
    varying |= {k: v for k, v in tags.varying_headers.items() if not _is_sequence_value(v)}
    for keyword, values in varying.items():
        dims, array = _over_grid(slice_coordinate(values), assembly.shape, grid)
        if dims != (split.get(keyword),):  # else the extra dim's own coords say it
            coords[snake_case(keyword)] = (dims, array)
    # provenance: where each frame came from, kept right by any isel, sortby or where
    paths = frames["path"].astype(str).to_numpy(dtype=object)
    coords["source_file"] = (grid, paths.reshape(assembly.shape), _SOURCE)
    numbers = frames["frame"].to_numpy(dtype=np.int64)
    coords["frame"] = (grid, numbers.reshape(assembly.shape), _FRAME)
    return coords


def _over_grid(
    values: np.ndarray, shape: tuple[int, ...], dims: tuple[str, ...]
) -> tuple[tuple[str, ...], np.ndarray]:
    """Per-frame values as a coordinate over only the grid dims they vary along."""
    array = values.reshape(shape)
    kept = []
    for axis in range(len(shape)):
        first = np.take(array, [0], axis=axis)
        same = np.array_equal(
            np.broadcast_to(first, array.shape), array, equal_nan=array.dtype.kind == "f"
        )
        if same:
            array = first
        else:
            kept.append(axis)
    array = array.reshape([shape[axis] for axis in kept])
    return tuple(dims[axis] for axis in kept), array


def _attrs(assembly: Assembly, tags: _SeriesTags) -> dict[str, Any]:
    frames = assembly.frames
    attrs = dict(tags.common)
    for keyword in (*tags.varying_index, *GEOMETRY_KEYWORDS):
        attrs.pop(keyword, None)
    # an enhanced multi-frame file keeps orientation, spacing and rescale in its functional
    # groups, not at the top level: the frames hold them, common to the stack
    for keyword in INDEX_KEYWORDS:
        value = json_safe(frames[keyword].iloc[0])
        if keyword not in (*attrs, *tags.varying_index, *GEOMETRY_KEYWORDS) and value is not None:
            attrs[keyword] = value
    attrs["TransferSyntaxUID"] = frames["TransferSyntaxUID"].iloc[0]
    if "tile" in frames:  # a Siemens mosaic: the size of its slices, not of the stored image
        attrs.update(Rows=int(frames["Rows"].iloc[0]), Columns=int(frames["Columns"].iloc[0]))
    if not frames["ImageOrientationPatient"].notna().all():
        attrs.pop("ImageOrientationPatient", None)
    attrs[ASSEMBLY_ATTR] = {
        **assembly.report,
        "varying_tags": tags.varying,
        "files": list(dict.fromkeys(frames["path"])),
    }
    return attrs


def open_study(
    root: Source | pd.DataFrame, *, chunks: Chunks = None, rtol: float = SPACING_RTOL
) -> xr.DataTree:
    """Open every image series under a root as a DataTree: patient / study / series.

    Parameters
    ----------
    root : str, os.PathLike, sequence of paths, or pandas.DataFrame
        What :func:`dicomarray.scan` accepts, or its result.
    chunks, rtol
        As for :func:`open_series`.

    Returns
    -------
    xarray.DataTree
        Nodes ``/<patient>/<study>/<series>``, named from PatientID, StudyDate and
        StudyID, and SeriesNumber and SeriesDescription (made safe: letters, digits, ``-``,
        ``_`` and ``.`` only). Each series node holds the lazy volume as the variable
        ``image``. Series that cannot be opened are listed with the reason in the root's
        ``attrs["skipped_series"]``.
    """
    index = as_index(root)
    images = index[index["Rows"].notna()]
    nodes: dict[str, xr.Dataset] = {}
    skipped: list[dict[str, str]] = []
    for uid, rows in images.groupby("SeriesInstanceUID", sort=False, dropna=False):
        try:
            volume = open_series(rows, str(uid), chunks=chunks, rtol=rtol)
        except DicomArrayError as exc:
            skipped.append({"series_uid": str(uid), "reason": str(exc)})
            logger.warning("series %s not opened: %s", uid, exc)
            continue
        nodes[_unique(_node_path(rows), nodes)] = volume.to_dataset()
    tree = xr.DataTree.from_dict(nodes)
    tree.attrs["skipped_series"] = skipped
    return tree


def _node_path(rows: pd.DataFrame) -> str:
    # plain cells: a SeriesNumber read as 201.0 or pd.NA still names node 201_..., never 201.0_
    return "/" + "/".join(series_folders(plain_cells(rows.iloc[:1]).iloc[0]))


def _unique(path: str, taken: dict[str, Any]) -> str:
    candidate, n = path, 1
    while candidate in taken:
        n += 1
        candidate = f"{path}-{n}"
    return candidate
