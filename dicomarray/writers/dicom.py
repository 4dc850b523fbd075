"""numpy or xarray to DICOM: a new series written frame by frame over a template series.

Every tag comes from the template frame at the same place in the volume (an n-D volume
``(*extra, z, y, x)`` is a grid of frames, each over its own template file); the pixel data,
the rescale, the window and the identity of the series and its instances are new. The
values are rescaled into the template's stored type, so a float volume (or one wider than
the stored type) reads back within one quantisation step, and an integer volume that fits
is written exactly.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pydicom
import xarray as xr
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds

from ..deid import as_deidentifier
from ..errors import DicomArrayError, WriteError
from ..geometry import POSITION_COORDS, VolumeGeometry, positions_along_normal
from ..header import read_dataset
from ..labels import series_label
from ..mosaic import is_mosaic
from ..reorient import ORIENTATION_ATTR
from ..staging import Stage, discarding, os_errors, stage
from ..transforms import VALUES_ATTR, fold_bits, modality_values
from ..volume import open_series
from .common import compute_and_wait, dask_data, store_into

if TYPE_CHECKING:
    from ..deid import Deidentifier

#: Template attributes that would be untrue once the pixel data is replaced: removed, and
#: the ones the new pixels define (window, smallest and largest values) are written anew.
UNTRUE_AFTER_REPLACEMENT = (
    "PixelData",
    "FloatPixelData",
    "DoubleFloatPixelData",
    "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
    "DataSetTrailingPadding",
    "IconImageSequence",
    "PixelPaddingValue",
    "PixelPaddingRangeLimit",
    "SmallestImagePixelValue",
    "LargestImagePixelValue",
    "SmallestPixelValueInSeries",
    "LargestPixelValueInSeries",
    "ModalityLUTSequence",
    "VOILUTSequence",
    "RealWorldValueMappingSequence",
    "WindowCenter",
    "WindowWidth",
    "WindowCenterWidthExplanation",
    "VOILUTFunction",
    "RescaleSlope",
    "RescaleIntercept",
)
#: Added to the template's (0020,0011) *Series Number* when ``series_number`` is not given,
#: so that viewers list the new series beside the template, not on top of it.
SERIES_NUMBER_OFFSET = 1000
_DERIVATION = "Pixel data replaced by dicomarray.to_dicom; other attributes from the template"
_Z_TOLERANCE_MM = 1e-3

Template = str | os.PathLike | Sequence[str | os.PathLike] | xr.DataArray


def to_dicom(
    volume: np.ndarray | xr.DataArray,
    template: Template,
    out_dir: str | os.PathLike,
    *,
    series_description: str | None = None,
    series_number: int | None = None,
    window: tuple[float, float] | None = None,
    values: str | None = None,
    deidentify: bool | Deidentifier = False,
    overwrite: bool = False,
    compute: bool = True,
) -> Any:
    """Write a volume as a new DICOM series, one file per frame, over a template series.

    Each frame of the volume is written over the same frame of the template: of a folder
    or files, in the order of :func:`dicomarray.open_series` (ascending along the slice
    normal); of a DataArray, in its own order, each frame over the file its provenance
    coordinates ``source_file`` and ``frame`` name. So any selection of a series
    (``isel``, ``sortby``, slices dropped by ``where``) is its own template and is written
    over exactly its own files: no file is read again to find or sort them.

    An n-D volume, dims ``(*extra, z, y, x)`` such as ``("t", "z", "y", "x")``, is a grid
    of frames: one instance is written per frame, over the template file its provenance
    coordinates (dims ``(*extra, z)``) name, so what tells the volumes apart stays each
    frame's own: (0020,0100) *Temporal Position Identifier*, (0020,0105) *Number of
    Temporal Positions*, (0008,0032) *Acquisition Time*, (0018,0081) *Echo Time*, the
    diffusion tags. A selection along any dim (``isel(t=[0, 2])``) writes only the frames
    it holds.

    Each slice keeps every tag of its template file, such as (0018,0050) *Slice
    Thickness* and (0020,0052) *Frame of Reference UID*. Where it lies, (0020,0032) *Image
    Position (Patient)*, (0020,0037) *Image Orientation (Patient)*, (0028,0030) *Pixel
    Spacing* and (0020,1041) *Slice Location*, is the volume's own geometry
    (:class:`~dicomarray.geometry.VolumeGeometry`) when it is a DataArray that carries one
    (its ``z``, ``y``, ``x`` and ``image_position_*`` coordinates and the orientation in
    its attrs), so flipped rows or columns (``reorient``) are written as they lie; else
    the template file's. What else changes:

    - the pixel data, in the template's stored type ((0028,0100) *Bits Allocated*,
      (0028,0101) *Bits Stored*, (0028,0103) *Pixel Representation*), with one (0028,1053)
      *Rescale Slope* and (0028,1052) *Rescale Intercept* for the series chosen so that the
      values read back within one quantisation step (the slope); integer values that fit
      are written exactly, with the template's own rescale when possible;
    - a new (0020,000E) *Series Instance UID*, new (0008,0018) *SOP Instance UID* and
      (0002,0003) *Media Storage SOP Instance UID*; (0020,0013) *Instance Number* from 1 in
      volume order (C order of the grid: ``z`` fastest, then the last extra dim);
      (0008,0008) *Image Type* ``DERIVED\\SECONDARY``; a (0008,2112) *Source
      Image Sequence* naming the template slice; series, content and creation date/time;
    - (0028,0106) *Smallest* and (0028,0107) *Largest Image Pixel Value* of each slice and
      the window ((0028,1050) *Window Center*, (0028,1051) *Window Width*);
    - the transfer syntax: always uncompressed explicit VR little endian, whatever the
      template's (encapsulated pixel data is not carried over). Attributes that describe
      the old pixels (padding, LUT sequences, icon image) are removed;
    - NaN values, the padding :meth:`~dicomarray.accessor.DicomAccessor.hu` marks, are
      written as the template file's (0028,0120) *Pixel Padding Value* (its stored value,
      declared again as the only padding value, without a range limit); a template that
      declares none refuses them.

    The files are written into a partial folder beside ``out_dir`` and renamed at the end;
    they are named ``IM_0001.dcm`` ... from the instance numbers. The template is only read.

    Parameters
    ----------
    volume : numpy.ndarray or xarray.DataArray
        Values ``(*extra, z, y, x)`` (the template's dims) in the units of the template's
        rescaled values (e.g. HU for CT); a DataArray with the template's dims is put in
        its order. Streamed one dask chunk at a time; it is read twice: for its value
        range, then to write.
    template : str, os.PathLike, sequence of paths, or xarray.DataArray
        A series folder, its files, or a volume opened by :func:`dicomarray.open_series`,
        whole or any selection of its slices (its ``source_file`` and ``frame``
        coordinates name the files), 3-D or n-D. Single-frame grey images only.
    out_dir : str or os.PathLike
        The folder to create.
    series_description : str, optional
        (0008,103E) *Series Description*; default: the template's plus ``" (derived)"``.
    series_number : int, optional
        (0020,0011) *Series Number*; default: the template's plus
        :data:`SERIES_NUMBER_OFFSET`.
    window : (center, width), optional
        The window to write, in rescaled units; default: the volume's value range.
    values : {"modality", "stored"}, optional
        What the volume holds: ``"modality"`` values in the template's rescaled units (HU
        for CT), written as they are; or ``"stored"`` pixel values, as
        :func:`dicomarray.open_series` returns them (or ``to-npy --raw`` writes them),
        turned into modality values first by the rescale that describes them (see
        :func:`dicomarray.transforms.modality_values`): a DataArray's own attrs and
        coordinates, for a numpy array the template's. Default: a DataArray says what it
        holds (``attrs["dicomarray_values"]`` or ``attrs["units"]`` mean modality values;
        without them, integers are stored values, so a volume from
        :func:`dicomarray.open_series` round-trips exactly); a numpy array holds modality
        values. A ``values`` that contradicts the
        DataArray's own record is a :class:`~dicomarray.errors.WriteError`.
    deidentify : bool or dicomarray.deid.Deidentifier, default False
        False: every tag of the template is copied, patient names, IDs, birth date, study
        dates, institution, private tags and sequences included (the output identifies
        the patient as the template does). True (a default
        :class:`~dicomarray.deid.Deidentifier`: key from ``DICOMARRAY_DEID_KEY`` or the
        saved key) or a Deidentifier: each data set, once filled, goes through the PS3.15
        profile (:meth:`~dicomarray.deid.Deidentifier.dataset`): the template's tags,
        nested sequences and private tags by the profile, every UID keyed (the copied
        Study, Frame of Reference and referenced instance UIDs as a de-identified copy of
        the tree names them), PatientIdentityRemoved YES. The new SeriesDescription goes
        through the profile too (removed unless ``clean_descriptors``). Files are still
        named ``IM_0001.dcm`` ... (no tag in a name); a template file whose
        BurnedInAnnotation is YES is a DeidentificationError naming its output file.
    overwrite : bool, default False
        Replace an existing ``out_dir`` (only a folder of ``.dcm`` files).
    compute : bool, default True
        With False, return a :class:`dask.delayed.Delayed` running the whole export as one
        task (the value range must be known before the first slice is written).

    Returns
    -------
    list of pathlib.Path or dask.delayed.Delayed
        The files written, in volume order (C order of the frame grid).

    Raises
    ------
    WriteError
        The volume's shape is not the template's (its frame grid, Rows, Columns), the volume's
        ``z`` coordinate differs from its template files' positions (by more than
        0.001 mm), its ``sop_instance_uid`` coordinate names instances other than its
        template files' (it comes from another series: drop the coordinate to write it
        over this template anyway), the template has no ``source_file`` coordinate (a
        de-identified export read back, a volume built from numpy), holds one file twice,
        names a file that is gone or is multi-frame or colour, the volume holds infinite
        values, or
        NaN where a template file declares no (0028,0120) *Pixel Padding Value*, or
        ``out_dir`` exists.

    See Also
    --------
    dicomarray.writers.open_npy : an ``.npy`` and its sidecar as a DataArray, whose
        attrs and coordinates make these checks possible for exported arrays.
    """
    export = _prepare(
        volume,
        template,
        out_dir,
        series_description=series_description,
        series_number=series_number,
        window=window,
        values=values,
        deidentifier=as_deidentifier(deidentify),
        overwrite=overwrite,
    )
    if compute:
        return export.run()
    import dask

    return dask.delayed(export.run, pure=False)(scheduler="sync")


# --------------------------------------------------------------------------------------------
# Stored types and rescale
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredType:
    """The template's stored integers: (0028,0100), (0028,0101) and (0028,0103)."""

    bits_allocated: int
    bits_stored: int
    signed: bool

    @classmethod
    def of(cls, ds: Dataset, path: Path) -> StoredType:
        bits = int(ds.get("BitsAllocated") or 16)
        if bits not in (8, 16, 32):
            raise WriteError(f"{path}: BitsAllocated {bits}: only 8, 16 or 32 can be written")
        stored = int(ds.get("BitsStored") or bits)
        return cls(bits, min(max(stored, 1), bits), int(ds.get("PixelRepresentation") or 0) == 1)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(f"<{'i' if self.signed else 'u'}{self.bits_allocated // 8}")

    @property
    def limits(self) -> tuple[int, int]:
        if self.signed:
            return -(2 ** (self.bits_stored - 1)), 2 ** (self.bits_stored - 1) - 1
        return 0, 2**self.bits_stored - 1


@dataclass(frozen=True)
class Rescale:
    """Rescaled value = stored value x slope + intercept; both exactly as written (DS)."""

    slope: float = 1.0
    intercept: float = 0.0

    def stored(self, values: np.ndarray, stored_type: StoredType) -> np.ndarray:
        """Values to stored integers: rounded to the nearest step, clipped to the range."""
        scaled = np.subtract(values, self.intercept, dtype=np.float64)
        scaled /= self.slope
        np.rint(scaled, out=scaled)
        np.clip(scaled, *stored_type.limits, out=scaled)
        return scaled.astype(stored_type.dtype)

    @property
    def is_identity(self) -> bool:
        return self.slope == 1.0 and self.intercept == 0.0


def choose_rescale(
    low: float,
    high: float,
    *,
    integral: bool,
    stored_type: StoredType,
    preferred: Rescale | None = None,
) -> Rescale:
    """A rescale that maps ``low .. high`` into the stored type's range.

    Integer values are kept exact (slope 1) when their span fits: with ``preferred`` (the
    template's rescale) if it has slope 1, else intercept 0, else an intercept that shifts
    them into range. Otherwise the range is spread linearly over every stored value, so
    the error is at most half a slope.
    """
    lo, hi = stored_type.limits
    if integral:
        candidates = [preferred] if preferred and preferred.slope == 1.0 else []
        candidates += [Rescale(1.0, 0.0), Rescale(1.0, _ds_value(low - lo))]
        for rescale in candidates:
            if float(rescale.intercept).is_integer() and (
                lo <= low - rescale.intercept and high - rescale.intercept <= hi
            ):
                return rescale
    span = high - low
    if span <= 0:
        return Rescale(1.0, _ds_value(low))  # every value is stored as 0
    exact = span / (hi - lo)
    slope = _ds_value(exact)
    bump = 1e-12
    while slope < exact:
        bump *= 10
        slope = _ds_value(exact * (1 + bump))
    return Rescale(slope, _ds_value(low - lo * slope))


def _ds_text(value: float) -> str:
    """A decimal string (DS, at most 16 characters) for a number."""
    value = float(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return format_number_as_ds(value)


def _ds_value(value: float) -> float:
    """The number as it reads back from its DS text."""
    return float(_ds_text(value))


# --------------------------------------------------------------------------------------------
# Preparing an export: inputs, template and destination checked before anything is written
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _SeriesValues:
    """The values shared by every new instance."""

    uid: str
    number: int | None
    description: str | None
    timestamp: dt.datetime
    window: tuple[float, float] | None  # (low, high) in rescaled units, or None: the data range


@dataclass
class _Export:
    data: Any  # (*extra, z, y, x) numpy or dask array
    files: list[Path]  # one per frame of the grid, in C order
    grid: tuple[int, ...]  # (*extra, z)
    planes: tuple[SlicePlane, ...] | None  # None: each file's own geometry is kept
    stored_type: StoredType
    template_rescale: Rescale | None
    series: _SeriesValues
    output: Stage
    template_label: str
    deidentifier: Deidentifier | None = None

    def run(self, *, scheduler: str | None = None) -> list[Path]:
        """Find the value range, write the slices into a partial folder, publish it."""
        with discarding([self.output.partial]):
            low, high, integral, has_nan = _value_range(self.data, scheduler)
            padding = (
                _padding_values(self.files, self.stored_type, self.template_label)
                if has_nan
                else None
            )
            rescale = choose_rescale(
                low,
                high,
                integral=integral,
                stored_type=self.stored_type,
                preferred=self.template_rescale,
            )
            self.output.partial.mkdir()
            writer = _SliceWriter(
                folder=self.output.partial,
                files=tuple(self.files),
                grid=self.grid,
                planes=self.planes,
                stored_type=self.stored_type,
                rescale=rescale,
                window=self.series.window or (low, high),
                series=self.series,
                padding=padding,
                deidentifier=self.deidentifier,
                final=self.output.final,
            )
            data = dask_data(self.data)
            data = data.rechunk({data.ndim - 2: -1, data.ndim - 1: -1})  # whole frames
            compute_and_wait(store_into(data, writer), scheduler=scheduler)
            self.output.publish()
        return [self.output.final / writer.name(index) for index in range(len(self.files))]


@dataclass(frozen=True)
class _SliceWriter:
    """A :func:`dask.array.store` target writing each chunk of whole frames as files.

    The volume is the frame grid ``(*extra, z)`` of whole frames; frame ``index`` (its
    place in C order of the grid) is written over ``files[index]`` as instance
    ``index + 1``. Picklable (paths and values only), so chunks are written where they are
    computed.
    """

    folder: Path
    files: tuple[Path, ...]
    #: The frame grid's shape ``(*extra, z)``: ``(z,)`` for a 3-D volume.
    grid: tuple[int, ...]
    #: One plane per slice along ``z``, shared by every volume of the grid.
    planes: tuple[SlicePlane, ...] | None
    stored_type: StoredType
    rescale: Rescale
    window: tuple[float, float]
    series: _SeriesValues
    #: Each file's stored (0028,0120) *Pixel Padding Value*, written where a value is NaN;
    #: None when the volume holds no NaN.
    padding: tuple[int, ...] | None = None
    #: The profile each data set goes through once filled; None: every tag of the template.
    deidentifier: Deidentifier | None = None
    #: The folder the files end up in (``folder`` is its partial), to name them by.
    final: Path | None = None

    def __setitem__(self, key: tuple[slice, ...], block: np.ndarray) -> None:
        block = np.asarray(block)
        starts = [k.start or 0 for k in key[: len(self.grid)]]
        for offset in np.ndindex(block.shape[: len(self.grid)]):
            position = tuple(s + o for s, o in zip(starts, offset, strict=True))
            self._write(int(np.ravel_multi_index(position, self.grid)), position[-1], block[offset])

    def _write(self, index: int, z: int, values: np.ndarray) -> None:
        """Frame ``index`` of the grid (at slice ``z``) as one file over its template file."""
        pad = None if self.padding is None else self.padding[index]
        stored = self._stored(values, pad, self.files[index])
        ds = _slice_dataset(
            self.files[index], index, stored, self.rescale, self.window, self.series
        )
        if pad is not None:
            _set_padding_value(ds, pad, self.stored_type)
        if self.planes is not None:
            self.planes[z].set_on(ds)
        if self.deidentifier is not None:
            # last: the template's tags, its sequences and UIDs, and ours, all by the profile
            self.deidentifier.dataset(ds, (self.final or self.folder) / self.name(index))
        with os_errors(self.folder / self.name(index)):
            pydicom.dcmwrite(self.folder / self.name(index), ds, enforce_file_format=True)

    def _stored(self, values: np.ndarray, pad: int | None, template: Path) -> np.ndarray:
        """One slice's stored values; NaN (padding) as the template file's padding value."""
        if pad is None:
            return self.rescale.stored(values, self.stored_type)
        padding = np.isnan(values)
        filled = np.where(padding, self.rescale.intercept, values)  # stored as 0, then padding
        stored = self.rescale.stored(filled, self.stored_type)
        if np.any(stored[~padding] == pad):
            raise WriteError(
                f"{template}: a value that is not NaN would be stored as {pad}, the template's "
                "(0028,0120) PixelPaddingValue, and read back as padding"
            )
        stored[padding] = pad
        return stored

    def name(self, index: int) -> str:
        """``IM_0001.dcm`` ...: from the instance number, never from a tag."""
        return f"IM_{index + 1:0{max(4, len(str(len(self.files))))}d}.dcm"


def _prepare(
    volume: np.ndarray | xr.DataArray,
    template: Template,
    out_dir: str | os.PathLike,
    *,
    series_description: str | None,
    series_number: int | None,
    window: tuple[float, float] | None,
    values: str | None,
    deidentifier: Deidentifier | None,
    overwrite: bool,
) -> _Export:
    opened, grid, files, first = _template_files(template)
    shape = (*grid.values(), int(first.Rows), int(first.Columns))
    _volume_data(volume, shape, grid, files[0].parent)  # shape and type, before any conversion
    planes = None
    if isinstance(volume, xr.DataArray):
        _check_positions(volume, opened, files)
        _check_instances(volume, opened, grid, files)
        planes = slice_planes(volume)
        if planes is None:
            _check_not_reoriented(volume)
    volume = _modality_volume(volume, _values_kind(volume, values), opened)
    data = _volume_data(volume, shape, grid, files[0].parent)
    output = stage(
        out_dir,
        overwrite=overwrite,
        folder=True,
        replaceable=_is_dicom_folder,
        kind="DICOM",
    )
    if any(_is_inside(path, output.final) for path in files):
        raise WriteError(
            f"{output.final} holds the template's files; write the new series elsewhere"
        )
    series = _SeriesValues(
        uid=generate_uid(),
        number=_series_number(first, series_number),
        description=_series_description(first, series_description),
        timestamp=dt.datetime.now(),
        window=_checked_window(window),
    )
    return _Export(
        data=data,
        files=files,
        grid=tuple(grid.values()),
        planes=planes,
        stored_type=StoredType.of(first, files[0]),
        template_rescale=_template_rescale(first),
        series=series,
        output=output,
        template_label=series_label(opened.attrs),
        deidentifier=deidentifier,
    )


def _template_files(
    template: Template,
) -> tuple[xr.DataArray, dict[str, int], list[Path], Dataset]:
    """The opened template, its frame grid, each frame's file, and the first file's header.

    The grid is the template's dims but the plane's, ``(*extra, z)`` in its own order (a
    3-D series: ``(z,)``). The files are its provenance coordinates ``source_file``
    (dims ``(*extra, z)``, or ``(z,)``), in C order of the grid, which any ``isel``,
    ``sortby`` or ``where`` keeps right: no header is read and nothing is sorted again, so
    a selection of a series is written over exactly its own files.
    """
    opened = template if isinstance(template, xr.DataArray) else open_series(template)
    label = series_label(opened.attrs)
    if "z" not in opened.dims or "source_file" not in opened.coords:
        raise WriteError(
            f"the template ({label}) has no source_file coordinate along z, so the file each "
            "slice came from is unknown (a de-identified export read back, a volume built "
            "from numpy, or a resample() or equalize() whose new slices mix source slices); "
            "pass the series folder or the volume dicomarray.open_series returned"
        )
    if "channel" in opened.dims:
        raise WriteError(f"the template ({label}) is a colour series: only grey can be written")
    extra = [str(d) for d in opened.dims if d not in ("z", "y", "x")]
    grid = {d: int(opened.sizes[d]) for d in (*extra, "z")}
    files = [Path(str(name)) for name in along_grid(opened["source_file"], grid)]
    if missing := [f for f in files if not f.is_file()]:
        raise WriteError(
            f"{missing[0]}: the template's file is gone ({len(missing)} of {len(files)}, {label})"
        )
    first = read_dataset(files[0], stop_before_pixels=True)
    _check_single_frame(opened, first, files[0])
    seen: set[Path] = set()
    for path in files:
        if path in seen:
            raise WriteError(f"{path}: the template ({label}) {_why_twice(first)}")
        seen.add(path)
    return opened, grid, files, first


def _why_twice(first: Dataset) -> str:
    """Why a template names one file for several slices: a Siemens mosaic tiles them all
    in one image (each written instance would replace the whole file), else a selection
    repeated a slice."""
    if is_mosaic(first.get("ImageType")):
        return (
            "is a Siemens mosaic (each file tiles several slices) and each written "
            "instance replaces one file: a mosaic cannot be a template; write NIfTI, "
            "zarr or npy, or pass a classic single-slice series as template="
        )
    return "holds this file's slice twice"


def along_grid(coord: xr.DataArray, grid: dict[str, int]) -> np.ndarray:
    """A coordinate's values for each frame of the grid, flat in C order of the grid.

    Provenance coordinates lie on ``(*extra, z)`` or on fewer of those dims (``frame`` may
    be on ``z`` only): they are repeated along the dims they lack.
    """
    missing = {d: n for d, n in grid.items() if d not in coord.dims}
    return coord.expand_dims(missing).transpose(*grid).values.reshape(-1)


def _check_single_frame(opened: xr.DataArray, first: Dataset, path: Path) -> None:
    """Refuse a multi-frame template: each written instance replaces one whole file.

    A frame past the first of a file (the ``frame`` coordinate), or a first file that
    holds several frames ((0028,0008) *Number of Frames*), would have its file's every
    other frame replaced by this one.
    """
    frames = np.asarray(opened["frame"].values) if "frame" in opened.coords else np.zeros(0)
    if (frames > 0).any() or int(first.get("NumberOfFrames") or 1) > 1:
        raise WriteError(
            f"{path}: multi-frame templates are not supported ({series_label(opened.attrs)})"
        )


def _volume_data(
    volume: np.ndarray | xr.DataArray, shape: tuple[int, ...], grid: dict[str, int], where: Path
) -> Any:
    """The volume's values in the template's dims order ``(*extra, z, y, x)``, checked."""
    if isinstance(volume, xr.DataArray):
        if set(volume.dims) == {*grid, "y", "x"}:
            volume = volume.transpose(*grid, "y", "x")
        data = volume.data
    else:
        data = np.asarray(volume)
    if tuple(data.shape) != shape:
        frames = (
            f"{grid['z']} slices"
            if len(grid) == 1
            else " x ".join(f"{n} ({d})" for d, n in grid.items()) + " frames"
        )
        raise WriteError(
            f"volume shape {tuple(data.shape)} does not match the template {where}: "
            f"{frames} of {shape[-2]} x {shape[-1]} (Rows x Columns)"
        )
    kind = np.dtype(data.dtype).kind
    if kind not in "biuf":
        raise WriteError(f"volume values of type {data.dtype} cannot be written as pixels")
    return data.astype(np.uint8) if kind == "b" else data


def _check_positions(volume: xr.DataArray, template: xr.DataArray, files: list[Path]) -> None:
    """Refuse to write a slice over a template slice at another position.

    Every other tag of the slice comes from its template file, so a volume slice whose
    ``z`` is not its template slice's would carry another slice's tags.
    """
    if "z" not in volume.coords or "z" not in template.coords:
        return
    z = np.asarray(volume["z"].values, dtype=float)
    template_z = np.asarray(template["z"].values, dtype=float)
    wrong = np.flatnonzero(~np.isclose(z, template_z, rtol=0, atol=_Z_TOLERANCE_MM))
    if wrong.size:
        first = wrong[0]
        raise WriteError(
            f"volume slice {first} is at z = {z[first]:.6g} but its template file "
            f"{files[first]} is at z = {template_z[first]:.6g} ({wrong.size} of {len(z)} "
            "slices differ); pass a template whose slices are the volume's, in its order"
        )


def _check_instances(
    volume: xr.DataArray, template: xr.DataArray, grid: dict[str, int], files: list[Path]
) -> None:
    """Refuse to write a volume of one series over the files of another.

    Two series of one acquisition can share shape and positions; their SOP Instance UIDs
    tell them apart, and a volume that carries them (opened, or read back by
    :func:`~dicomarray.writers.npy.open_npy`) is checked slice by slice.
    """
    if "sop_instance_uid" not in volume.coords or "sop_instance_uid" not in template.coords:
        return
    mine = [str(uid) for uid in along_grid(volume["sop_instance_uid"], grid)]
    theirs = [str(uid) for uid in along_grid(template["sop_instance_uid"], grid)]
    wrong = [i for i, (a, b) in enumerate(zip(mine, theirs, strict=True)) if a != b]
    if wrong:
        first = wrong[0]
        raise WriteError(
            f"volume frame {first} is instance {mine[first]}, but its template file "
            f"{files[first]} is instance {theirs[first]} ({len(wrong)} of {len(mine)} frames "
            "differ): the volume comes from another series; pass its own series as the "
            "template, or drop its sop_instance_uid coordinate to write it over this one"
        )


#: What :func:`to_dicom`'s ``values`` may say a volume holds.
VALUE_KINDS = ("modality", "stored")


def _values_kind(volume: np.ndarray | xr.DataArray, values: str | None) -> str:
    """``"modality"`` or ``"stored"``: what the volume holds, from ``values`` or its record."""
    if values is not None and values not in VALUE_KINDS:
        raise WriteError(f"values must be one of {VALUE_KINDS}, got {values!r}")
    if not isinstance(volume, xr.DataArray):
        return values or "modality"
    recorded = volume.attrs.get(VALUES_ATTR) or ("modality" if volume.attrs.get("units") else None)
    if recorded is None:
        # stored pixel values are integers; a float or boolean volume is already a result
        return values or ("stored" if np.dtype(volume.dtype).kind in "iu" else "modality")
    if values == "stored":
        raise WriteError(
            f"values='stored', but the volume records {VALUES_ATTR}={recorded!r} "
            f"(units {volume.attrs.get('units')!r}): its values are not stored pixel values"
        )
    return "modality"


def _modality_volume(
    volume: np.ndarray | xr.DataArray, kind: str, template: xr.DataArray
) -> np.ndarray | xr.DataArray:
    """The volume in modality values: stored values go through the rescale describing them."""
    if kind == "modality":
        return volume
    if not isinstance(volume, xr.DataArray):
        # the template's own rescale (per slice, or its Modality LUT) describes the values
        volume = template.copy(data=dask_data(volume))  # lazy: chunk by chunk
    try:
        return modality_values(volume)
    except DicomArrayError as exc:
        raise WriteError(f"stored values cannot be turned into modality values: {exc}") from exc


def _is_dicom_folder(folder: Path) -> bool:
    entries = list(folder.iterdir())
    return all(entry.is_file() and entry.suffix.lower() == ".dcm" for entry in entries)


def _is_inside(path: Path, folder: Path) -> bool:
    try:
        Path(path).resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def _series_number(first: Dataset, number: int | None) -> int | None:
    if number is not None:
        return int(number)
    template = first.get("SeriesNumber")
    return None if template in (None, "") else int(template) + SERIES_NUMBER_OFFSET


def _series_description(first: Dataset, description: str | None) -> str:
    if description is None:
        description = f"{first.get('SeriesDescription') or 'series'} (derived)"
    return str(description)[:64]


def _checked_window(window: tuple[float, float] | None) -> tuple[float, float] | None:
    if window is None:
        return None
    center, width = (float(v) for v in window)
    if not (math.isfinite(center) and math.isfinite(width) and width > 0):
        raise WriteError(f"window must be a finite (center, width) with width > 0, got {window}")
    return center - width / 2, center + width / 2


def _template_rescale(first: Dataset) -> Rescale | None:
    if "RescaleSlope" not in first or "RescaleIntercept" not in first:
        return None
    return Rescale(float(first.RescaleSlope), float(first.RescaleIntercept))


# --------------------------------------------------------------------------------------------
# The volume's value range, read before anything is written
# --------------------------------------------------------------------------------------------


def _value_range(data: Any, scheduler: str | None) -> tuple[float, float, bool, bool]:
    """Smallest and largest value but NaN, whether all of them are integers, whether any is NaN.

    NaN is padding (:meth:`dicomarray.accessor.DicomAccessor.hu` marks it so), written as
    the template's padding value; infinite values have no stored value.
    """
    if isinstance(data, np.ndarray):
        xp: Any = np
    else:
        import dask.array as xp
    if np.dtype(data.dtype).kind in "biu":
        checks = (data.min(), data.max(), True, False)
    else:
        nan = xp.isnan(data)
        # min and max with NaN left out, without nanmin's warning on a chunk of only NaN
        checks = (
            xp.where(nan, np.inf, data).min(),
            xp.where(nan, -np.inf, data).max(),
            (nan | (data == xp.round(data))).all(),
            nan.any(),
        )
    if xp is not np:
        import dask

        checks = dask.compute(*checks, scheduler=scheduler)
    low, high, integral, has_nan = float(checks[0]), float(checks[1]), *checks[2:]
    if not (math.isfinite(low) and math.isfinite(high)):
        raise WriteError(
            "the volume holds infinite values, or nothing but NaN; DICOM pixels cannot"
        )
    return low, high, bool(integral), bool(has_nan)


def _padding_values(files: list[Path], stored_type: StoredType, label: str) -> tuple[int, ...]:
    """Each template file's (0028,0120) *Pixel Padding Value*, as the pixels store it.

    The tag's VR (US or SS) may disagree with the pixels' sign: its bits are read as the
    pixels are (see :func:`dicomarray.transforms.stored_padding`).
    """
    values = []
    for path in files:
        value = read_dataset(path, stop_before_pixels=True).get("PixelPaddingValue")
        if isinstance(value, MultiValue | list) and len(value) == 1:
            value = value[0]
        if not isinstance(value, int):
            raise WriteError(
                f"the volume holds NaN (padding, as hu() marks it), but the template file "
                f"{path} of {label} declares no one-integer (0028,0120) PixelPaddingValue "
                "to write it as; fill the NaN (volume.fillna(value)) or take "
                "hu(padding='keep')"
            )
        folded = fold_bits(np.array(value), stored_type.bits_stored, signed=stored_type.signed)
        values.append(int(folded))
    return tuple(values)


# --------------------------------------------------------------------------------------------
# Where each written slice lies: the volume's own geometry
# --------------------------------------------------------------------------------------------

#: Differences below these are the same value written twice (mm; direction cosines): the
#: template file's own text is then kept.
_PLANE_TOLERANCES = {
    "ImagePositionPatient": _Z_TOLERANCE_MM,
    "ImageOrientationPatient": 1e-6,
    "PixelSpacing": 1e-6,
}


@dataclass(frozen=True)
class SlicePlane:
    """Where one slice of the volume lies, as its file states it.

    ``position`` is (0020,0032) *Image Position (Patient)* (LPS mm of the first voxel),
    ``orientation`` (0020,0037) *Image Orientation (Patient)* (the directions of
    increasing column, then row), ``pixel_spacing`` (0028,0030) *Pixel Spacing* (between
    rows, between columns) and ``normal`` the direction along which (0020,1041) *Slice
    Location* is measured.
    """

    position: tuple[float, ...]
    orientation: tuple[float, ...]
    pixel_spacing: tuple[float, float]
    normal: tuple[float, ...]

    def set_on(self, ds: Dataset) -> None:
        """Write this plane into a template slice's data set.

        A tag keeps the template's own text where it agrees with the plane (within
        :data:`_PLANE_TOLERANCES`), so an unmoved slice keeps it byte for byte. The Slice
        Location moves with the plane along the normal, keeping the template's origin.
        """
        before = _numbers(ds.get("ImagePositionPatient"), 3)
        for keyword, values in (
            ("ImagePositionPatient", self.position),
            ("ImageOrientationPatient", self.orientation),
            ("PixelSpacing", self.pixel_spacing),
        ):
            kept = _numbers(ds.get(keyword), len(values))
            if kept is None or not np.allclose(
                kept, values, rtol=0, atol=_PLANE_TOLERANCES[keyword]
            ):
                setattr(ds, keyword, [_ds_text(v) for v in values])
        location = _numbers(ds.get("SliceLocation"), 1)
        if before is not None and location is not None:
            moved = positions_along_normal(
                np.subtract([self.position], before), np.asarray(self.normal)
            )
            if abs(moved[0]) > _Z_TOLERANCE_MM:
                ds.SliceLocation = _ds_text(location[0] + moved[0])


def slice_planes(volume: xr.DataArray) -> tuple[SlicePlane, ...] | None:
    """Each slice's plane from the volume's own geometry (:class:`VolumeGeometry`), or None.

    A volume carries geometry when it has the coordinates ``z``, ``y``, ``x`` and the
    per-slice :data:`~dicomarray.geometry.POSITION_COORDS`, and its attrs hold (0020,0037)
    *Image Orientation (Patient)*; flipped rows or columns (after ``reorient``) or rows
    and columns moved in their plane are then written where they lie. Without (a numpy
    array made into a DataArray, attrs dropped by arithmetic, where the orientation would
    have to be guessed), None: each file keeps its template's geometry.

    Raises
    ------
    WriteError
        If the volume has those coordinates but no geometry can be built from them.
    """
    if not all(n in volume.coords for n in ("z", "y", "x", *POSITION_COORDS)):
        return None
    try:
        geometry = VolumeGeometry.of(volume)
    except DicomArrayError as exc:
        raise WriteError(f"the volume's geometry ({series_label(volume.attrs)}): {exc}") from exc
    if not geometry.orientation_known:
        return None
    # (0020,0037) names the directions of increasing column (x), then row (y)
    orientation = tuple(float(v) for v in (*geometry.direction("x"), *geometry.direction("y")))
    return tuple(
        SlicePlane(
            position=tuple(float(v) for v in position),
            orientation=orientation,
            pixel_spacing=(abs(geometry.row_step), abs(geometry.column_step)),
            normal=tuple(float(v) for v in geometry.normal),
        )
        for position in geometry.slice_positions
    )


def _check_not_reoriented(volume: xr.DataArray) -> None:
    """Refuse a reoriented volume that carries no geometry of its own to write.

    Its rows or columns may be flipped (a reoriented volume whose ``y`` and ``x``
    coordinates were dropped), so the template files' planes would put every pixel at its
    mirror image.
    """
    record = volume.attrs.get(ORIENTATION_ATTR)
    if isinstance(record, dict) and record.get("code") != record.get("source_code"):
        raise WriteError(
            f"the volume ({series_label(volume.attrs)}) was reoriented from "
            f"{record.get('source_code')} to {record.get('code')}, and carries no geometry "
            "(y, x and image_position coordinates, the orientation attr) to write its "
            "flipped rows and columns where they lie; write it as dicomarray opened it, "
            "or export it again without orientation="
        )


def _numbers(value: Any, count: int) -> np.ndarray | None:
    """A tag's value as ``count`` floats, or None when it holds something else."""
    items = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    try:
        numbers = np.array([float(v) for v in items], dtype=float)
    except (TypeError, ValueError):
        return None
    return numbers if numbers.shape == (count,) and np.isfinite(numbers).all() else None


# --------------------------------------------------------------------------------------------
# One slice's data set
# --------------------------------------------------------------------------------------------


def _slice_dataset(
    template_path: Path,
    index: int,
    stored: np.ndarray,
    rescale: Rescale,
    window: tuple[float, float],
    series: _SeriesValues,
) -> Dataset:
    ds = read_dataset(template_path, stop_before_pixels=True)
    source = Dataset()
    source.ReferencedSOPClassUID = ds.SOPClassUID
    source.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    had_rescale = "RescaleSlope" in ds
    for keyword in UNTRUE_AFTER_REPLACEMENT:
        if keyword in ds:
            del ds[keyword]
    _set_identity(ds, index, series, source)
    if had_rescale or not rescale.is_identity:
        ds.RescaleIntercept = _ds_text(rescale.intercept)
        ds.RescaleSlope = _ds_text(rescale.slope)
    _set_window(ds, window, series.window is None)
    _set_pixels(ds, stored)
    ds.file_meta = _file_meta(ds)
    return ds


def _set_identity(ds: Dataset, index: int, series: _SeriesValues, source: Dataset) -> None:
    from .. import __version__

    date, time = series.timestamp.strftime("%Y%m%d"), series.timestamp.strftime("%H%M%S.%f")
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = series.uid
    ds.InstanceNumber = index + 1
    if series.number is not None:
        ds.SeriesNumber = series.number
    ds.SeriesDescription = series.description
    ds.ImageType = _derived_image_type(ds.get("ImageType"))
    ds.DerivationDescription = _DERIVATION
    ds.SourceImageSequence = [source]
    ds.SeriesDate = ds.ContentDate = ds.InstanceCreationDate = date
    ds.SeriesTime = ds.ContentTime = ds.InstanceCreationTime = time
    ds.SoftwareVersions = _software_versions(ds.get("SoftwareVersions"), __version__)


def _derived_image_type(image_type: Any) -> list[str]:
    values = list(image_type) if isinstance(image_type, MultiValue | list) else [image_type]
    rest = [str(v) for v in values[2:] if v is not None]
    return ["DERIVED", "SECONDARY", *rest]


def _software_versions(existing: Any, version: str) -> list[str]:
    values = list(existing) if isinstance(existing, MultiValue | list) else [existing]
    return [str(v) for v in values if v] + [f"dicomarray {version}"]


def _set_window(ds: Dataset, window: tuple[float, float], from_data: bool) -> None:
    """The window as (0028,1050) *Window Center* and (0028,1051) *Window Width*.

    A window narrower than 1 needs the LINEAR_EXACT function (LINEAR requires width >= 1).
    """
    low, high = window
    width = high - low
    if width <= 0:
        width = 1.0
    elif width < 1:
        ds.VOILUTFunction = "LINEAR_EXACT"
    ds.WindowCenter = _ds_text((low + high) / 2)
    ds.WindowWidth = _ds_text(width)
    if from_data:
        ds.WindowCenterWidthExplanation = "DATA RANGE"


def _set_pixels(ds: Dataset, stored: np.ndarray) -> None:
    data = stored.tobytes()
    bits = stored.dtype.itemsize * 8
    if bits <= 16:
        vr = "SS" if stored.dtype.kind == "i" else "US"
        ds.add_new(0x00280106, vr, int(stored.min()))
        ds.add_new(0x00280107, vr, int(stored.max()))
    if len(data) % 2:
        data += b"\0"
    ds.add_new(0x7FE00010, "OB" if bits == 8 else "OW", data)


def _set_padding_value(ds: Dataset, pad: int, stored_type: StoredType) -> None:
    """(0028,0120) *Pixel Padding Value* with the pixels' VR; no range: one value pads."""
    ds.add_new(0x00280120, "SS" if stored_type.signed else "US", pad)


def _file_meta(ds: Dataset) -> FileMetaDataset:
    from .. import __version__

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"DICOMARRAY{__version__}"[:16]
    return meta
