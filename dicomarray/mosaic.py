"""Siemens mosaics: the slices of a volume tiled in one stored image, cut into slice rows.

Siemens MR scanners (syngo MR B and D versions) can store every slice of an EPI volume in
one image, a mosaic: (0008,0008) *Image Type* holds ``MOSAIC`` and the slices fill a
square grid of ``ceil(sqrt(n))`` tiles a side in row-major order (the unused tiles at the
end blank), ``n`` being *NumberOfImagesInMosaic* of the CSA image header (0029,1010), or
of the private (0019,100A). Without either, the tile size is that of (0018,1310)
*Acquisition Matrix* and every tile of the grid counts, as dcm2niix infers it.

The mosaic's (0020,0032) *Image Position (Patient)* is the corner of the whole grid
taken as one image: the first tile's corner lies ``(Columns - tile columns) / 2`` pixels
along the row direction and ``(Rows - tile rows) / 2`` pixels along the column direction
from it (the correction of dcm2niix and nibabel). Each next tile lies one
(0018,0088) *Spacing Between Slices* further along the CSA header's *SliceNormalVector*:
along the normal of the image plane when the mosaic is numbered foot to head (F>>H, the
scanner's default), against it when numbered head to foot (H>>F). Assembly then orders
the slices along the normal like any others, so both numberings give the same volume.

:func:`expand_mosaics` makes each mosaic frame row one row per slice; the pixel reader
(:class:`~dicomarray.pixels.FrameStack`) cuts each tile out of its stored frame.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .attrs import finite_numbers, plain_cell
from .errors import DicomArrayError, warn_data_problem
from .geometry import slice_normal
from .header import plain_value, read_dataset

#: Columns the expansion adds: the 0-based tile of a slice in its mosaic (None for a row
#: that is no mosaic) and the size of the stored mosaic image its pixels are cut from.
MOSAIC_COLUMNS = ("tile", "mosaic_rows", "mosaic_columns")
#: The header is read up to here: groups 0018 to 0029 hold all the mosaic needs
_AFTER_CSA = 0x002A0000
_CSA_CREATOR = "SIEMENS CSA HEADER"
_MR_HEADER_CREATOR = "SIEMENS MR HEADER"
#: |cos| above which the CSA slice normal counts as parallel to the image plane's normal
_PARALLEL = 0.99


@dataclass(frozen=True)
class MosaicLayout:
    """How one mosaic tiles its slices.

    Attributes
    ----------
    n_tiles : int
        Slices in the mosaic (*NumberOfImagesInMosaic*).
    tile_rows, tile_columns : int
        Size of one slice.
    direction : int
        +1 when tile ``k + 1`` lies further along the image plane's normal than tile
        ``k`` (F>>H numbering), -1 when it lies against it (H>>F).
    spacing : float
        Distance (mm) between the planes of tiles ``k`` and ``k + 1``.
    """

    n_tiles: int
    tile_rows: int
    tile_columns: int
    direction: int
    spacing: float


def is_mosaic(image_type: Any) -> bool:
    """Whether an (0008,0008) *Image Type* value (an index cell, a pydicom MultiValue or
    one string) holds ``MOSAIC``."""
    values = [image_type] if isinstance(image_type, str | bytes) else image_type
    if not isinstance(values, Iterable):
        values = [values]
    return "MOSAIC" in {str(v).upper() for v in values if v}


def expand_mosaics(frames: pd.DataFrame, warnings_out: list[str]) -> pd.DataFrame:
    """Each mosaic frame row as one row per slice; other rows get ``tile`` None.

    Slice rows keep their mosaic's columns, but ``Rows`` and ``Columns`` are the tile's,
    ``mosaic_rows`` and ``mosaic_columns`` the stored image's, ``tile`` the slice's
    0-based tile number, ``ImagePositionPatient`` the slice's own position and
    ``SliceLocation`` None (the mosaic's says nothing about one slice). A frames table
    without mosaics comes back unchanged, without the columns.

    Parameters
    ----------
    frames : pandas.DataFrame
        Frame rows of one series (:func:`dicomarray.frames.expand_frames`).
    warnings_out : list of str
        Gets a message for every data problem (also warned as a
        :class:`~dicomarray.errors.GeometryWarning`): a mosaic that cannot be cut (it
        stays one image), a guessed number of slices, order or spacing.

    Raises
    ------
    InvalidDicomError, HeaderLimitError
        The header of a mosaic file cannot be read within the package's limits.
    """
    mosaic = frames["ImageType"].map(is_mosaic)
    if not mosaic.any():
        return frames
    layouts = {
        size: _layout(group, warnings_out)
        for size, group in frames[mosaic].groupby(["Rows", "Columns"], sort=False)
    }
    records = []
    for row, tiled in zip(frames.to_dict("records"), mosaic, strict=True):
        layout = layouts.get((row["Rows"], row["Columns"])) if tiled else None
        if layout is None:
            records.append({**row, "tile": None, "mosaic_rows": None, "mosaic_columns": None})
        else:
            records.extend(_slice_rows(row, layout))
    columns = [*frames.columns, *MOSAIC_COLUMNS]
    # object columns built from the cells: plain cells stay plain (None, not NaN)
    expanded = pd.DataFrame(
        {column: [record[column] for record in records] for column in columns},
        columns=columns,
        dtype=object,
    )
    expanded.attrs = dict(frames.attrs)
    return expanded


def _layout(group: pd.DataFrame, warnings_out: list[str]) -> MosaicLayout | None:
    """The layout of the mosaics of one stored size, from the first file's header.

    The number of slices and their numbering are settings of the protocol, the same for
    every mosaic of a series; reading one header, not every file's, keeps opening a long
    fMRI series quick. Each mosaic's own orientation still places its slices.
    """
    first = group.sort_values("path", kind="stable").iloc[0]
    path, rows, columns = str(first["path"]), int(first["Rows"]), int(first["Columns"])
    ds = read_dataset(path, stop_before_tag=_AFTER_CSA)
    csa = _csa_image_header(ds, path, warnings_out)
    n_tiles = _number_of_images(ds, csa)
    if n_tiles is None:
        tile = _acquisition_matrix_tile(ds, rows, columns)
        if tile is None:
            _warn(
                warnings_out,
                f"{path}: ImageType MOSAIC ({len(group)} frame(s)) but neither the CSA "
                "header's NumberOfImagesInMosaic, (0019,100A) nor an AcquisitionMatrix "
                "that divides the image tells the tiles: each opens as one tiled image, "
                "not cut into slices",
            )
            return None
        n_tiles = (rows // tile[0]) * (columns // tile[1])
        _warn(
            warnings_out,
            f"{path}: mosaic without NumberOfImagesInMosaic: {n_tiles} slices of "
            f"{tile[0]} x {tile[1]} inferred from AcquisitionMatrix (blank tiles included)",
        )
    across = math.ceil(math.sqrt(n_tiles)) if 0 < n_tiles <= rows * columns else 0
    if not across or rows % across or columns % across:
        grid = f"a grid of {across} x {across} tiles" if across else "no grid of tiles"
        _warn(
            warnings_out,
            f"{path}: NumberOfImagesInMosaic {n_tiles} needs {grid}, which does not divide "
            f"the {rows} x {columns} image: each mosaic opens as one tiled image, not cut "
            "into slices",
        )
        return None
    direction = _direction(first["ImageOrientationPatient"], csa, path, warnings_out)
    spacing = _slice_spacing(first, warnings_out)
    return MosaicLayout(n_tiles, rows // across, columns // across, direction, spacing)


def _csa_image_header(ds: Any, path: str, warnings_out: list[str]) -> dict[str, Any] | None:
    """The parsed CSA image header (0029,xx10) of a Siemens file, or None."""
    try:
        return _csareader().get_csa_header(ds, "image")
    except Exception as exc:  # noqa: BLE001 - bytes the parser trips on (struct, asserts)
        _warn(warnings_out, f"{path}: unreadable CSA image header ({exc}); not used")
        return None


def _csareader() -> Any:
    """nibabel's CSA header parser, imported when a mosaic needs it (0.3 s)."""
    with warnings.catch_warnings():
        # nibabel.nicom warns on import that its DICOM *readers* are experimental; only
        # its CSA parser is used here
        warnings.simplefilter("ignore", UserWarning)
        from nibabel.nicom import csareader
    return csareader


def _number_of_images(ds: Any, csa: dict[str, Any] | None) -> int | None:
    """*NumberOfImagesInMosaic*: the CSA image header's, else the private (0019,100A)."""
    if csa is not None:
        n = _number(_csareader().get_n_mosaic(csa))
        if n is not None and n.is_integer():
            return int(n)
    try:
        n = _number(ds.private_block(0x0019, _MR_HEADER_CREATOR)[0x0A].value)
    except (KeyError, ValueError):  # no Siemens MR block, or no such element in it
        return None
    return int(n) if n is not None and n.is_integer() else None


def _number(value: Any) -> float | None:
    """One finite number from a header or index value, or None."""
    value = plain_value(plain_cell(value))
    if isinstance(value, list):
        value = value[0] if len(value) == 1 else None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _acquisition_matrix_tile(ds: Any, rows: int, columns: int) -> tuple[int, int] | None:
    """(rows, columns) of a tile from (0018,1310) *Acquisition Matrix*, if they divide the
    image into a square grid: ``[frequency rows, frequency columns, phase rows, phase
    columns]``, one of each pair 0."""
    matrix = finite_numbers(plain_value(ds.get("AcquisitionMatrix")), 4)
    if matrix is None:
        return None
    tile_rows, tile_columns = int(max(matrix[0], matrix[2])), int(max(matrix[1], matrix[3]))
    if tile_rows <= 0 or tile_columns <= 0 or rows % tile_rows or columns % tile_columns:
        return None
    if rows // tile_rows != columns // tile_columns:
        return None
    return tile_rows, tile_columns


def _direction(
    orientation: Any, csa: dict[str, Any] | None, path: str, warnings_out: list[str]
) -> int:
    """+1 (F>>H) or -1 (H>>F): the CSA SliceNormalVector against the image plane's normal."""
    cosines = finite_numbers(orientation, 6)
    vector = None
    if csa is not None:
        try:
            found = _csareader().get_slice_normal(csa)  # a numpy array, or None
        except ValueError:  # not 3 values
            found = None
        vector = None if found is None else finite_numbers(list(found), 3)
    if vector is not None and cosines is not None and np.linalg.norm(vector) > 0:
        try:
            cos = float(np.dot(slice_normal(cosines), vector / np.linalg.norm(vector)))
        except DicomArrayError:  # parallel cosines: assembly refuses the file, naming it
            return 1
        if abs(cos) >= _PARALLEL:
            return 1 if cos > 0 else -1
    _warn(
        warnings_out,
        f"{path}: no CSA SliceNormalVector along the image plane's normal: mosaic slices "
        "taken as numbered foot to head (F>>H)",
    )
    return 1


def _slice_rows(row: dict[str, Any], layout: MosaicLayout) -> list[dict[str, Any]]:
    """One record per slice of a mosaic frame row."""
    positions = _tile_positions(row, layout)
    shared = {
        **row,
        "Rows": layout.tile_rows,
        "Columns": layout.tile_columns,
        "mosaic_rows": row["Rows"],
        "mosaic_columns": row["Columns"],
        "SliceLocation": None,
    }
    return [
        {**shared, "tile": tile, "ImagePositionPatient": position}
        for tile, position in enumerate(positions)
    ]


def _tile_positions(row: dict[str, Any], layout: MosaicLayout) -> list[Any]:
    """Each tile's (0020,0032) *Image Position (Patient)*: the grid's corner moved to the
    first tile, then one slice spacing per tile along the numbering's direction.

    A position or orientation that cannot be used stays as it is on every slice: the
    assembly's checks then name the file.
    """
    corner = finite_numbers(row["ImagePositionPatient"], 3)
    cosines = finite_numbers(row["ImageOrientationPatient"], 6)
    if corner is None or cosines is None:
        return [row["ImagePositionPatient"]] * layout.n_tiles
    try:
        normal = slice_normal(cosines)
    except DicomArrayError:
        return [row["ImagePositionPatient"]] * layout.n_tiles
    spacing = finite_numbers(row["PixelSpacing"], 2)
    row_step, column_step = (1.0, 1.0) if spacing is None else (spacing[0], spacing[1])
    # PixelSpacing is (between rows, between columns): columns step along the row cosines
    first = (
        corner
        + (row["Columns"] - layout.tile_columns) / 2 * column_step * cosines[:3]
        + (row["Rows"] - layout.tile_rows) / 2 * row_step * cosines[3:]
    )
    step = layout.direction * layout.spacing * normal
    return [[float(v) for v in first + k * step] for k in range(layout.n_tiles)]


def _slice_spacing(row: pd.Series, warnings_out: list[str]) -> float:
    """(0018,0088) *Spacing Between Slices*, else (0018,0050) *Slice Thickness*, else 1."""
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = _number(row.get(keyword))
        if value is not None and value > 0:
            if keyword != "SpacingBetweenSlices":
                _warn(
                    warnings_out,
                    f"{row['path']}: mosaic without SpacingBetweenSlices: slices placed "
                    f"SliceThickness {value:g} mm apart",
                )
            return value
    _warn(
        warnings_out,
        f"{row['path']}: mosaic without SpacingBetweenSlices or SliceThickness: slices "
        "placed 1 mm apart",
    )
    return 1.0


def _warn(warnings_out: list[str], message: str) -> None:
    warnings_out.append(message)
    warn_data_problem(message)
