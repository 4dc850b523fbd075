"""Pixel values to numbers that mean something, and to display values in [0, 1].

Two layers:

- pure array functions (:func:`rescale`, :func:`apply_lut`, :func:`linear_window`,
  :func:`linear_exact_window`, :func:`sigmoid_window`, :func:`scale_to_unit`,
  :func:`standardize`): numpy or dask arrays in, the same kind out, float32, no attrs;
- DataArray functions (:func:`modality_values`, :func:`choose_window`, :func:`window`,
  :func:`normalize`) that take their parameters from the DICOM attrs and coordinates and
  fix the attrs they make untrue. They stay lazy: on a dask-backed volume they only build
  a graph.

Every DataArray function works on whole-volume graphs, and dask cannot push a later
selection into the file reads through them, so select slices *first*
(``volume.isel(z=k).dicom.hu()``) when only some slices are wanted.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import xarray as xr

from .errors import DicomArrayWarning, TransformError, warn_data_problem
from .header import read_dataset
from .labels import ASSEMBLY_ATTR, series_label
from .pixels import fill_padding, is_padding

logger = logging.getLogger(__name__)

#: Window presets (center, width) in HU, by name. Sources in :data:`PRESET_SOURCES`.
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "brain": (40.0, 80.0),
    "subdural": (75.0, 215.0),
    "stroke": (40.0, 40.0),
    "bone": (600.0, 2800.0),
    "soft_tissue": (50.0, 350.0),
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "abdomen": (50.0, 400.0),
    "liver": (30.0, 150.0),
    "spine_bone": (400.0, 1800.0),
}

_RADIOPAEDIA = "Radiopaedia, 'Windowing (CT)', https://radiopaedia.org/articles/windowing-ct"
#: Where each preset comes from.
PRESET_SOURCES: dict[str, str] = {
    "brain": f"{_RADIOPAEDIA}: head, brain W:80 L:40",
    "subdural": f"{_RADIOPAEDIA}: head, subdural W:130-300 L:50-100 (the middle of both ranges)",
    "stroke": "Turner & Holdsworth, 'CT stroke window settings', Br J Radiol 2011;84:1061 "
    "(W:40 L:40); also in " + _RADIOPAEDIA,
    "bone": f"{_RADIOPAEDIA}: head, temporal bones W:2800 L:600",
    "soft_tissue": f"{_RADIOPAEDIA}: head and neck soft tissues W:350-400 L:20-60",
    "lung": f"{_RADIOPAEDIA}: chest, lungs W:1500 L:-600",
    "mediastinum": f"{_RADIOPAEDIA}: chest, mediastinum W:350 L:50",
    "abdomen": f"{_RADIOPAEDIA}: abdomen, soft tissues W:400 L:50",
    "liver": f"{_RADIOPAEDIA}: abdomen, liver W:150 L:30",
    "spine_bone": f"{_RADIOPAEDIA}: spine, bone W:1800 L:400",
}

#: (0018,0015) *Body Part Examined* values for which CT defaults to the brain window.
HEAD_BODY_PARTS = frozenset({"HEAD", "BRAIN", "SKULL"})
#: What the values of a DataArray are, once a transform ran: "modality", "window",
#: "normalized" or "padding mask" (absent: stored values).
VALUES_ATTR = "dicomarray_values"
#: The window :func:`window` applied, as a JSON-safe dict.
WINDOW_ATTR = "dicomarray_window"
#: The normalization :func:`normalize` applied, as a JSON-safe dict.
NORMALIZE_ATTR = "dicomarray_normalize"
#: What :func:`modality_values` did with the series' padding, as a JSON-safe dict.
PADDING_ATTR = "dicomarray_padding"

_RESCALE_ATTRS = ("RescaleSlope", "RescaleIntercept", "RescaleType", "ModalityLUTSequence")
_RESCALE_COORDS = ("rescale_slope", "rescale_intercept", "rescale_type")
_PADDING_ATTRS = ("PixelPaddingValue", "PixelPaddingRangeLimit")
_PADDING_COORDS = ("pixel_padding_value", "pixel_padding_range_limit")
_WINDOW_ATTRS = (
    "WindowCenter",
    "WindowWidth",
    "WindowCenterWidthExplanation",
    "VOILUTFunction",
    "VOILUTSequence",
)
_WINDOW_COORDS = ("window_center", "window_width", "window_center_width_explanation")
NORMALIZE_METHODS = ("bounds", "percentile", "zscore")


# --------------------------------------------------------------------------------------------
# Pure array functions
# --------------------------------------------------------------------------------------------


def rescale(stored: Any, slope: Any = 1.0, intercept: Any = 0.0) -> Any:
    """Modality values from stored values: ``stored * slope + intercept`` as float32.

    (0028,1053) *Rescale Slope* and (0028,1052) *Rescale Intercept*; both may be arrays
    that broadcast against ``stored`` (one value per slice).
    """
    return stored.astype(np.float32) * np.float32(slope) + np.float32(intercept)


def apply_lut(stored: np.ndarray, table: np.ndarray, first_mapped: int) -> np.ndarray:
    """Look stored values up in a (0028,3000) *Modality LUT Sequence* table, as float32.

    ``table[i]`` is the output for the stored value ``first_mapped + i`` (the first two
    values of (0028,3002) *LUT Descriptor*); values below the first entry take the first
    output and values past the last take the last, as PS3.3 C.11.1.1 says.
    """
    index_type = np.int32 if stored.dtype.itemsize <= 2 else np.int64
    index = np.subtract(stored, first_mapped, dtype=index_type)
    np.clip(index, 0, len(table) - 1, out=index)
    return np.asarray(table, dtype=np.float32)[index]


def linear_window(values: Any, center: float, width: float) -> Any:
    """The DICOM LINEAR VOI function (PS3.3 C.11.2.1.2.1) scaled to [0, 1], float32.

    Values at or below ``center - 0.5 - (width - 1) / 2`` map to 0, values above
    ``center - 0.5 + (width - 1) / 2`` to 1, and values between linearly.
    """
    if not width >= 1:
        raise TransformError(
            f"a LINEAR window needs a width of at least 1, got {width}; "
            "use function='LINEAR_EXACT' for narrower windows"
        )
    if width == 1:  # the standard's step function: the linear part is empty
        return (values > np.float32(center - 0.5)).astype(np.float32)
    scaled = (values - np.float32(center - 0.5)) / np.float32(width - 1.0) + np.float32(0.5)
    return np.clip(scaled, np.float32(0.0), np.float32(1.0)).astype(np.float32)


def linear_exact_window(values: Any, center: float, width: float) -> Any:
    """The DICOM LINEAR_EXACT VOI function (PS3.3 C.11.2.1.3.2) scaled to [0, 1], float32.

    ``center - width / 2`` maps to 0 and ``center + width / 2`` to 1; any width > 0.
    """
    return scale_to_unit(values, center - width / 2, center + width / 2)


def sigmoid_window(values: Any, center: float, width: float) -> Any:
    """The DICOM SIGMOID VOI function (PS3.3 C.11.2.1.3.1) on [0, 1], float32:
    ``1 / (1 + exp(-4 (x - center) / width))``."""
    exponent = (values - np.float32(center)) * np.float32(-4.0 / width)
    return (np.float32(1.0) / (np.float32(1.0) + np.exp(exponent))).astype(np.float32)


def scale_to_unit(values: Any, low: Any, high: Any) -> Any:
    """Clip to ``[low, high]`` and scale to [0, 1], float32.

    ``low`` and ``high`` may be numbers or lazy 0-d dask arrays; equal bounds give 0.
    """
    low = _float32(low)
    span = np.maximum(_float32(high) - low, np.float32(np.finfo(np.float32).tiny))
    scaled = (values - low) / span
    return np.clip(scaled, np.float32(0.0), np.float32(1.0)).astype(np.float32)


def standardize(values: Any, mean: Any, std: Any) -> Any:
    """``(values - mean) / std`` as float32; a zero ``std`` divides by 1 instead."""
    std = _float32(std)
    return ((values - _float32(mean)) / np.where(std > 0, std, np.float32(1.0))).astype(np.float32)


def _float32(value: Any) -> Any:
    return value.astype(np.float32) if hasattr(value, "astype") else np.float32(value)


WINDOW_FUNCTIONS: dict[str, Callable[[Any, float, float], Any]] = {
    "LINEAR": linear_window,
    "LINEAR_EXACT": linear_exact_window,
    "SIGMOID": sigmoid_window,
}
"""(0028,1056) *VOI LUT Function* values and their implementations."""


# --------------------------------------------------------------------------------------------
# Modality values (HU)
# --------------------------------------------------------------------------------------------


def modality_values(obj: xr.DataArray, *, padding: str | float = "nan") -> xr.DataArray:
    """Modality values (Hounsfield units for CT) as a lazy float32 DataArray.

    A (0028,3000) *Modality LUT Sequence* in the attrs takes precedence; otherwise each
    slice's own (0028,1053) *Rescale Slope* and (0028,1052) *Rescale Intercept* apply (the
    coordinates ``rescale_slope`` / ``rescale_intercept`` when they vary, else the attrs;
    missing means 1 and 0).

    Parameters
    ----------
    obj : xarray.DataArray
        Stored values, as :func:`dicomarray.open_series` returns them, or any selection.
    padding : "nan", "keep" or float, default "nan"
        What becomes of the pixels that (0028,0120) *Pixel Padding Value* (with
        (0028,0121) *Pixel Padding Range Limit*, a range) marks as padding, the area
        outside the scanned field: ``"nan"`` makes them NaN, so that statistics, windows
        and models can leave them out (``numpy.nan*`` functions, ``xarray``'s
        ``skipna``); a number puts that modality value there (-1000 for air in HU);
        ``"keep"`` leaves the rescaled values. See :func:`stored_padding` for how the
        tags are read.

    Returns
    -------
    xarray.DataArray
        float32 values with ``attrs["units"]`` ("HU" for CT, else the (0028,1054) *Rescale
        Type* or (0028,3004) *Modality LUT Type*, or "unspecified") and
        ``attrs["dicomarray_values"] = "modality"``. The rescale and padding attrs and
        coordinates are gone: they no longer describe the values; when the series
        declares padding, ``attrs["dicomarray_padding"]`` records the stored values that
        are padding and what was done (``action``: "nan", "fill" or "keep"). Data already
        in HU (``units == "HU"``) or already converted is returned unchanged.

    Raises
    ------
    TransformError
        If the series is colour (a ``channel`` dim: RGB values are not modality values,
        so :func:`window` and :func:`normalize` refuse it too), the values are already
        windowed or normalized, a rescale value is not a number,
        a Modality LUT is declared but its data cannot be read, ``padding`` is not one of
        its choices, or a padding tag is not one integer (``padding="keep"`` ignores it).

    Notes
    -----
    A Modality LUT is read from the first file of the series (header only) and applied to
    every slice: per-slice LUTs are not supported.
    """
    if "channel" in obj.dims:  # window() and normalize() start here too
        raise TransformError(
            f"{obj.attrs.get('SeriesInstanceUID', 'the series')}: a colour (RGB) series "
            "has no modality values to rescale, window or normalize"
        )
    state = obj.attrs.get(VALUES_ATTR)
    if state in ("window", "normalized", "padding mask"):
        done = {"window": "windowed", "normalized": "normalized"}.get(state, "a padding mask")
        raise TransformError(f"the values are already {done}; take HU from stored values")
    if state == "modality" or obj.attrs.get("units") == "HU":
        return obj
    fill = _padding_fill(padding)
    pad = None if fill is None else stored_padding(obj)
    low, high = pad if pad is not None else (np.nan, np.nan)
    padded = None if pad is None or fill is None else (low, high, fill)
    lut = _modality_lut(obj)
    if lut is not None:
        table, first_mapped, declared = lut
        data = _map_slices(
            _modality_block, obj.data, 1.0, 0.0, low, high, fill=fill, lut=(table, first_mapped)
        )
    else:
        slope = _per_slice(obj, "rescale_slope", "RescaleSlope", 1.0)
        intercept = _per_slice(obj, "rescale_intercept", "RescaleIntercept", 0.0)
        from .lazy import rescaled_frames  # deferred: dask.array is slow to import

        declared = obj.attrs.get("RescaleType")
        # whole series: rescale (and fill padding) as each frame is read, one value per
        # frame of the grid in the order the frames are stored
        data = rescaled_frames(obj.data, *_frame_rescale(obj, slope, intercept, padded))
        if data is None:
            data = _map_slices(_modality_block, obj.data, slope, intercept, low, high, fill=fill)
    units = _modality_units(obj.attrs, declared)
    record = _padding_record(obj, fill, pad)
    return _with_values(
        obj,
        data,
        (*_RESCALE_ATTRS, *_PADDING_ATTRS),
        (*_RESCALE_COORDS, *_PADDING_COORDS),
        units=units,
        kind="modality",
        **({PADDING_ATTR: record} if record else {}),
    )


def _modality_block(
    stored: np.ndarray,
    slope: Any,
    intercept: Any,
    low: Any,
    high: Any,
    *,
    fill: float | None,
    lut: tuple[np.ndarray, int] | None = None,
) -> np.ndarray:
    """Modality values of one chunk of stored values: one float32 array, padding filled."""
    out = rescale(stored, slope, intercept) if lut is None else apply_lut(stored, *lut)
    if fill is not None:
        fill_padding(stored, out, low, high, fill)
    return out


def _map_slices(
    function: Callable[..., np.ndarray],
    data: Any,
    *params: Any,
    dtype: Any = np.float32,
    **kwargs: Any,
) -> Any:
    """``function(chunk, *params, **kwargs)`` on each chunk, lazily for dask arrays.

    ``params`` are numbers, or arrays that broadcast against ``data`` (one value per
    slice); each chunk gets the part of them that lies over it. ``dtype``: the result's.
    """
    if not _is_lazy(data):
        return function(np.asarray(data), *params, **kwargs)
    import dask.array

    aligned = []
    for param in params:
        array = np.asarray(param)
        array = array.reshape(array.shape or (1,) * data.ndim)
        chunks = tuple(c if n > 1 else (1,) for n, c in zip(array.shape, data.chunks, strict=True))
        aligned.append(dask.array.from_array(array, chunks=chunks))
    return dask.array.map_blocks(function, data, *aligned, dtype=dtype, **kwargs)


def _with_values(
    obj: xr.DataArray,
    data: Any,
    drop_attrs: Sequence[str],
    drop_coords: Sequence[str],
    **state: Any,
) -> xr.DataArray:
    """``obj`` holding new values, without the attrs and coordinates they make untrue."""
    result = obj.copy(deep=False, data=data).drop_vars(
        [name for name in drop_coords if name in obj.coords]
    )
    attrs = {k: v for k, v in obj.attrs.items() if k not in drop_attrs}
    attrs["units"] = state.pop("units")
    attrs[VALUES_ATTR] = state.pop("kind")
    attrs.update(state)
    result.attrs = attrs
    return result


def _per_slice(obj: xr.DataArray, coord: str, keyword: str, default: float) -> Any:
    """A rescale value per slice (a float32 array that broadcasts against ``obj.data``)."""
    if coord not in obj.coords:
        return np.float32(_number(obj.attrs.get(keyword, default), keyword))
    numbers = _slice_numbers(obj, coord)
    return np.where(np.isfinite(numbers), numbers, default).astype(np.float32)


def _frame_rescale(
    obj: xr.DataArray, slope: Any, intercept: Any, padded: tuple[Any, Any, float] | None
) -> tuple[Any, Any, tuple[Any, Any, float] | None]:
    """Slope, intercept and padding ``(low, high, fill)`` per frame (see :func:`_per_frame`)."""
    if padded is not None:
        low, high, fill = padded
        padded = (_per_frame(obj, low), _per_frame(obj, high), fill)
    return _per_frame(obj, slope), _per_frame(obj, intercept), padded


#: Dims that lie within one frame: a frame's values share every per-frame number.
_IN_FRAME_DIMS = ("y", "x", "channel")


def _per_frame(obj: xr.DataArray, values: Any) -> Any:
    """Per-slice ``values`` (broadcasting against ``obj``) as one number per frame.

    The frames of an untouched series are its leading dims (``(*extra, z)``) in C order,
    as :class:`~dicomarray.pixels.FrameStack` numbers them; a value given along some of
    them only (a rescale constant within each volume, on ``("t",)``) is repeated over
    the others. A scalar stays a scalar.
    """
    array = np.asarray(values)
    grid = [d for d in obj.dims if d not in _IN_FRAME_DIMS]
    if array.ndim == 0 or list(obj.dims[: len(grid)]) != grid:
        return values  # a transposed array is not read frame by frame anyway
    shape = (*(obj.sizes[d] for d in grid), *array.shape[len(grid) :])
    return np.broadcast_to(array, shape).reshape(-1)


def _slice_numbers(obj: xr.DataArray, coord: str) -> np.ndarray:
    """A per-slice coordinate as float64 (NaN where missing), broadcasting against ``obj``."""
    values = obj.coords[coord]
    values = values.transpose(*[d for d in obj.dims if d in values.dims])
    try:
        numbers = np.asarray(values.values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TransformError(f"coordinate {coord} holds values that are not numbers") from exc
    shape = [obj.sizes[d] if d in values.dims else 1 for d in obj.dims]
    return numbers.reshape(shape)


def _number(value: Any, keyword: str) -> float:
    """One finite number (a one-item list holds one), or a TransformError naming it."""
    single = value[0] if isinstance(value, list | tuple) and len(value) == 1 else value
    try:
        number = float(single)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise TransformError(f"{keyword} {value!r} is not one finite number")
    return number


def _modality_units(attrs: dict[str, Any], declared: Any) -> str:
    # CT modality values are HU by definition (PS3.3 C.8.2.1.1.8); "US" means unspecified
    if attrs.get("Modality") == "CT":
        return "HU"
    if isinstance(declared, str) and declared and declared != "US":
        return declared
    return "unspecified"


def _modality_lut(obj: xr.DataArray) -> tuple[np.ndarray, int, Any] | None:
    """The Modality LUT as (table, first stored value mapped, LUT type), if there is one."""
    items = obj.attrs.get("ModalityLUTSequence")
    if not items:
        return None
    from pydicom.pixels import apply_modality_lut

    dataset = _lut_dataset(obj)
    try:
        item = dataset.ModalityLUTSequence[0]
        entries, first_mapped = int(item.LUTDescriptor[0]) or 2**16, int(item.LUTDescriptor[1])
        # pydicom decodes the LUT (US or OW, either byte order); asking it for every input
        # value once gives the table in its own semantics
        inputs = np.arange(first_mapped, first_mapped + entries, dtype=np.int64)
        table = np.asarray(apply_modality_lut(inputs, dataset), dtype=np.float32)
    except Exception as exc:  # noqa: BLE001 - a malformed LUT is the file's fault
        raise TransformError(
            f"the Modality LUT Sequence cannot be used: {type(exc).__name__}: {exc}"
        ) from exc
    if table.shape != inputs.shape:
        raise TransformError(
            f"the Modality LUT holds {table.size} entries where its descriptor says {entries}"
        )
    return table, first_mapped, item.get("ModalityLUTType")


def _lut_dataset(obj: xr.DataArray) -> Any:
    """A pydicom Dataset holding the Modality LUT Sequence with its LUT Data."""
    from pydicom.dataset import Dataset

    items = obj.attrs["ModalityLUTSequence"]
    item = items[0] if isinstance(items, list) else items
    if not isinstance(item, dict):
        raise TransformError(f"the Modality LUT Sequence item {item!r} is not a data set")
    if isinstance(item.get("LUTData"), list):  # LUT Data with VR US survives in the attrs
        dataset, lut = Dataset(), Dataset()
        for keyword in ("LUTDescriptor", "LUTData", "ModalityLUTType"):
            if keyword in item:
                setattr(lut, keyword, item[keyword])
        dataset.ModalityLUTSequence = [lut]
        return dataset
    # LUT Data with VR OW is binary and not kept in the attrs: read the first file's header
    files = obj.attrs.get(ASSEMBLY_ATTR, {}).get("files", [])
    if not files:
        raise TransformError(
            "the attrs declare a Modality LUT Sequence, but its LUT Data is not in the attrs "
            "and no source file is known to read it from"
        )
    try:
        return read_dataset(files[0], stop_before_pixels=True)
    except Exception as exc:  # noqa: BLE001 - any read failure names the file
        raise TransformError(f"{files[0]}: cannot read the Modality LUT: {exc}") from exc


# --------------------------------------------------------------------------------------------
# Padding
# --------------------------------------------------------------------------------------------


def stored_padding(obj: xr.DataArray) -> tuple[Any, Any] | None:
    """The stored values a series marks as padding: ``(low, high)``, inclusive.

    From (0028,0120) *Pixel Padding Value* and, when present, (0028,0121) *Pixel Padding
    Range Limit* (PS3.3 C.7.5.1.1.2): one value, or the range between the two whichever
    is larger (MONOCHROME2 puts the value below the limit, MONOCHROME1 above). Both are
    stored values, compared before any rescale. Their VR (US or SS) may disagree with
    (0028,0103) *Pixel Representation*; they are read as the pixels are: the same bits,
    the pixels' sign, and only (0028,0101) *Bits Stored* of them (sign-extended when
    signed), so ``63536`` written as US in a signed series means -2000.

    Returns
    -------
    tuple or None
        Two numbers, or two per-slice arrays (NaN where a slice declares none) when the
        tags vary between slices; None when the series declares no padding.

    Raises
    ------
    TransformError
        If a tag is not one integer.
    """
    value = _padding_numbers(obj, "PixelPaddingValue")
    if value is None:
        return None
    limit = _padding_numbers(obj, "PixelPaddingRangeLimit")
    value = _as_stored(obj, value, "PixelPaddingValue")
    limit = value if limit is None else _as_stored(obj, limit, "PixelPaddingRangeLimit")
    limit = np.where(np.isnan(limit), value, limit)  # no limit on a slice: its one value
    low, high = np.minimum(value, limit), np.maximum(value, limit)
    return (float(low), float(high)) if np.ndim(low) == 0 else (low, high)


def padding_mask(obj: xr.DataArray) -> xr.DataArray:
    """Where a series' pixels are padding, as a lazy boolean DataArray named "padding".

    The mask beside ``hu(padding="keep")``, for code that wants the padding values and
    where they are. Found on stored values, as :func:`stored_padding` reads the tags; all
    False when the series declares no padding. The coordinates and attrs are the
    volume's, with ``attrs["dicomarray_values"] = "padding mask"``.

    Raises
    ------
    TransformError
        If ``obj`` holds values already converted (the stored values are gone), or a
        padding tag is not one integer.
    """
    if obj.attrs.get(VALUES_ATTR) is not None or obj.attrs.get("units") == "HU":
        raise TransformError(
            "padding is found on stored values: take the mask before hu(), window() or normalize()"
        )
    pad = stored_padding(obj)
    low, high = pad if pad is not None else (np.nan, np.nan)
    mask = obj.copy(deep=False, data=_map_slices(is_padding, obj.data, low, high, dtype=bool))
    mask.name = "padding"
    mask.attrs = {**obj.attrs, VALUES_ATTR: "padding mask"}
    return mask


def _padding_fill(padding: str | float) -> float | None:
    """The value padding gets (NaN for "nan"), or None to keep it."""
    if isinstance(padding, str):
        choice = padding.strip().lower()
        if choice in ("nan", "keep"):
            return None if choice == "keep" else math.nan
    elif not isinstance(padding, bool):
        try:
            number = float(padding)
        except (TypeError, ValueError):
            number = math.nan
        if math.isfinite(number):
            return number
    raise TransformError(f'padding must be "nan", "keep" or a finite number, got {padding!r}')


def _padding_numbers(obj: xr.DataArray, keyword: str) -> Any:
    """A padding tag: a number, a per-slice array when it varies, or None."""
    coord = _PADDING_COORDS[_PADDING_ATTRS.index(keyword)]
    if coord in obj.coords:
        numbers = _slice_numbers(obj, coord)
        if not all(_is_integer(v) for v in numbers[np.isfinite(numbers)].tolist()):
            raise TransformError(f"coordinate {coord} holds values that are not integers")
        return numbers
    value = obj.attrs.get(keyword)
    if value is None:
        return None
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not _is_integer(value):
        raise TransformError(
            f"{keyword} {value!r} is not one integer; hu(padding='keep') ignores it"
        )
    return float(value)


def _is_integer(value: Any) -> bool:
    """An integral number a stored pixel value could be (beyond 32 bits none can)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) and value == round(value) and abs(value) < 2**32


def _as_stored(obj: xr.DataArray, value: Any, keyword: str) -> Any:
    """A padding tag as the pixel reader reads stored bits (see :func:`stored_padding`)."""
    dtype = np.dtype(obj.dtype)
    if dtype.kind not in "iu":  # not stored integers: nothing to reinterpret
        return value
    width = dtype.itemsize * 8
    bits = obj.attrs.get("BitsStored")
    if isinstance(bits, bool) or not isinstance(bits, int) or not 0 < bits <= width:
        bits = width
    numbers = np.asarray(value, dtype=np.float64)
    present = np.isfinite(numbers)
    integers = np.where(present, numbers, 0).astype(np.int64)
    folded = fold_bits(integers, bits, signed=dtype.kind == "i")
    changed = present & (folded != fold_bits(integers, width, signed=dtype.kind == "i"))
    if changed.any():
        warn_data_problem(
            f"{keyword} {value} does not fit Bits Stored {bits}: the pixels holding it read "
            f"as {np.unique(folded[changed]).tolist()}, which are taken as padding; in "
            f"{series_label(obj.attrs)}",
            DicomArrayWarning,
        )
    result = np.where(present, folded, np.nan)
    return float(result) if result.ndim == 0 else result


def fold_bits(values: np.ndarray, bits: int, *, signed: bool) -> np.ndarray:
    """The low ``bits`` bits of ``values``, sign-extended when ``signed``."""
    low = values & ((1 << bits) - 1)
    if signed:
        low = np.where(low >= 1 << (bits - 1), low - (1 << bits), low)
    return low


def _padding_record(
    obj: xr.DataArray, fill: float | None, pad: tuple[Any, Any] | None
) -> dict[str, Any] | None:
    """What became of the padding, for the attrs; None when the series declares none."""
    if fill is None:  # kept: still say which stored values are padding, if the tags tell
        try:
            pad = stored_padding(obj)
        except TransformError:
            declared = {k: obj.attrs[k] for k in _PADDING_ATTRS if k in obj.attrs}
            return {"action": "keep", "declared": declared}
    if pad is None:
        return None
    low, high = pad
    if np.ndim(low) == 0:
        stored: Any = [int(low), int(high)]
    else:
        pairs = zip(np.ravel(low).tolist(), np.ravel(high).tolist(), strict=True)
        stored = [None if math.isnan(a) else [int(a), int(b)] for a, b in pairs]
    if fill is None or math.isnan(fill):
        return {"stored_values": stored, "action": "keep" if fill is None else "nan"}
    return {"stored_values": stored, "action": "fill", "fill_value": fill}


# --------------------------------------------------------------------------------------------
# Windows
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """A VOI window: center and width in modality units, the VOI LUT function, its source.

    ``center is None`` means "the range of the values it is applied to" (LINEAR_EXACT from
    the minimum to the maximum), the fallback when nothing else is known.
    """

    center: float | None
    width: float | None
    function: str = "LINEAR"
    source: str = "arguments"

    def __post_init__(self) -> None:
        if self.function not in WINDOW_FUNCTIONS:
            raise TransformError(
                f"unknown VOI LUT function {self.function!r}; use one of {list(WINDOW_FUNCTIONS)}"
            )
        if self.center is None:
            return
        if self.width is None or not (math.isfinite(self.width) and self.width > 0):
            raise TransformError(f"window width must be a number > 0, got {self.width}")
        if not math.isfinite(self.center):
            raise TransformError(f"window center must be a finite number, got {self.center}")
        if self.function == "LINEAR" and self.width < 1:
            raise TransformError(
                f"a LINEAR window needs a width of at least 1 (PS3.3 C.11.2.1.2.1), got "
                f"{self.width}; use function='LINEAR_EXACT' for narrower windows"
            )

    @classmethod
    def from_range(cls, low: float, high: float, source: str = "value range") -> Window:
        """The LINEAR_EXACT window that maps ``low`` to 0 and ``high`` to 1."""
        if not (math.isfinite(low) and math.isfinite(high)):
            raise TransformError(
                f"no value range to take a window from ({low} to {high}): are all the "
                "values shown padding (NaN)? Give a center and width or a preset"
            )
        width = float(high) - float(low)
        return cls(
            (float(low) + float(high)) / 2, width if width > 0 else 1.0, "LINEAR_EXACT", source
        )

    def describe(self) -> dict[str, Any]:
        """JSON-safe record of the window, for the attrs."""
        return {
            "center": self.center,
            "width": self.width,
            "function": self.function,
            "source": self.source,
        }


def preset_window(name: str) -> tuple[float, float]:
    """(center, width) of a named preset; case, spaces and dashes do not matter.

    Raises
    ------
    TransformError
        If there is no such preset; the message lists the known ones.
    """
    key = str(name).strip().lower().replace(" ", "_").replace("-", "_")
    if key not in WINDOW_PRESETS:
        raise TransformError(f"unknown window preset {name!r}; presets: {sorted(WINDOW_PRESETS)}")
    return WINDOW_PRESETS[key]


def default_preset(attrs: dict[str, Any]) -> str | None:
    """The preset used when a series names no window: by (0008,0060) *Modality*.

    CT of the head (by (0018,0015) *Body Part Examined*) gets "brain", other CT "soft_tissue";
    other modalities have no HU scale and get ``None`` (the value range).
    """
    if attrs.get("Modality") != "CT":
        return None
    part = str(attrs.get("BodyPartExamined", "")).upper()
    return "brain" if part in HEAD_BODY_PARTS else "soft_tissue"


def choose_window(
    obj: xr.DataArray,
    center: float | None = None,
    width: float | None = None,
    *,
    preset: str | None = None,
    function: str | None = None,
) -> Window:
    """The window to apply: the arguments, a preset, the series' own, or a default.

    In that order: ``center`` and ``width`` (both or neither); ``preset``; the series'
    (0028,1050) *Window Center* and (0028,1051) *Window Width* (the first value of each,
    with (0028,1056) *VOI LUT Function*; when slices disagree, the most common pair); the
    :func:`default_preset` for the modality; the range of the values.

    Raises
    ------
    TransformError
        For an unknown preset or function, a width <= 0, only one of center and width, or
        both a preset and a center and width.
    """
    function = None if function is None else str(function).upper()
    if preset is not None:
        if center is not None or width is not None:
            raise TransformError("give either a preset or a center and width, not both")
        return Window(*preset_window(preset), function or "LINEAR", f"preset {preset}")
    if center is not None or width is not None:
        if center is None or width is None:
            raise TransformError(f"give both a window center and width, got {center}, {width}")
        return Window(_number(center, "center"), _number(width, "width"), function or "LINEAR")
    own = _series_window(obj, function)
    if own is not None:
        return own
    name = default_preset(obj.attrs)
    if name is not None:
        return Window(*WINDOW_PRESETS[name], function or "LINEAR", f"default for CT: {name}")
    return Window(None, None, "LINEAR_EXACT", "value range")


def _series_window(obj: xr.DataArray, function: str | None) -> Window | None:
    centers = _first_values(obj, "WindowCenter", "window_center")
    widths = _first_values(obj, "WindowWidth", "window_width")
    pairs = [
        (c, w)
        for c, w in zip(centers, widths, strict=False)
        if c is not None and w is not None and math.isfinite(c) and math.isfinite(w) and w > 0
    ]
    if not pairs:
        return None
    center, width = Counter(pairs).most_common(1)[0][0]
    chosen = function or _declared_function(obj) or "LINEAR"
    if chosen == "LINEAR" and width < 1:  # invalid for LINEAR; the exact function is meant
        chosen = "LINEAR_EXACT"
    explanation = _first_values(obj, "WindowCenterWidthExplanation", "", numbers=False)
    label = f"series window ({explanation[0]})" if explanation and explanation[0] else "series"
    return Window(center, width, chosen, label)


def _declared_function(obj: xr.DataArray) -> str | None:
    """The series' (0028,1056) *VOI LUT Function*, checked; None when it has none.

    Raises
    ------
    TransformError
        If it is not one of :data:`WINDOW_FUNCTIONS`, has several values (DICOM allows
        one) or differs between slices: ``function=`` then has to choose.
    """
    if "voi_lut_function" in obj.coords:
        declared: Any = sorted({str(v) for v in np.ravel(obj.coords["voi_lut_function"].values)})
    else:
        declared = obj.attrs.get("VOILUTFunction")
    if isinstance(declared, list | tuple) and len(declared) == 1:
        declared = declared[0]
    if declared is None or declared == "":
        return None
    if not isinstance(declared, str):
        raise TransformError(
            f"VOILUTFunction {declared!r} holds several values (one is allowed, or the slices "
            f"disagree); pass function= as one of {list(WINDOW_FUNCTIONS)}"
        )
    name = declared.strip().upper()
    if name not in WINDOW_FUNCTIONS:
        raise TransformError(
            f"VOILUTFunction {declared!r} is not a VOI LUT function of DICOM; pass function= "
            f"as one of {list(WINDOW_FUNCTIONS)}"
        )
    return name


def _first_values(obj: xr.DataArray, keyword: str, coord: str, *, numbers: bool = True) -> list:
    """The first value of a multi-valued tag, per slice when it varies, else once."""
    if coord and coord in obj.coords:
        raw = list(np.ravel(obj.coords[coord].values))  # per frame: (*extra, z) on n-D
    elif keyword in obj.attrs:
        raw = [obj.attrs[keyword]]
    else:
        return []
    return [_first(value, numbers) for value in raw]


def _first(value: Any, numbers: bool) -> Any:
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    elif isinstance(value, str):  # a per-slice coordinate joins values with a backslash
        value = value.split("\\")[0]
    if not numbers:
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def window(
    obj: xr.DataArray,
    center: float | None = None,
    width: float | None = None,
    *,
    preset: str | None = None,
    function: str | None = None,
) -> xr.DataArray:
    """Apply a VOI window: modality values to display values in [0, 1], lazily, float32.

    Stored values are converted to modality values first (:func:`modality_values`); the
    window is chosen by :func:`choose_window`.

    Returns
    -------
    xarray.DataArray
        Values in [0, 1] with ``attrs["dicomarray_window"]`` saying which window was applied
        (center, width, function, source), ``units="1"`` and ``dicomarray_values="window"``;
        the series' own window attrs are gone (they no longer describe the values).
    """
    return apply_window(obj, choose_window(obj, center, width, preset=preset, function=function))


def apply_window(obj: xr.DataArray, chosen: Window) -> xr.DataArray:
    """Apply a :class:`Window` (see :func:`window`)."""
    values = modality_values(obj)
    data = values.data
    if chosen.center is None:
        low, high = np.nanmin(data), np.nanmax(data)
        if not _is_lazy(data):  # in memory: record the numbers the range gave
            chosen = Window.from_range(low, high)
        out = scale_to_unit(data, low, high)
    else:
        width = cast(float, chosen.width)  # set whenever center is: Window checks it
        out = WINDOW_FUNCTIONS[chosen.function](data, chosen.center, width)
    return _with_values(
        values,
        out,
        _WINDOW_ATTRS,
        _WINDOW_COORDS,
        units="1",
        kind="window",
        **{WINDOW_ATTR: chosen.describe()},
    )


def _is_lazy(data: Any) -> bool:
    return hasattr(data, "dask")


# --------------------------------------------------------------------------------------------
# Normalization
# --------------------------------------------------------------------------------------------


#: Bounds ``normalize`` takes by default for values in HU (CT): air to dense bone-free tissue.
CT_NORMALIZE_BOUNDS = (-1000.0, 400.0)
#: The default of ``normalize``'s bounds: they follow the data (see :func:`normalize`).
AUTO = "auto"
Bound = float | str | None


def normalize(
    obj: xr.DataArray,
    min_bound: Bound = AUTO,
    max_bound: Bound = AUTO,
    *,
    method: str = "bounds",
    percentiles: tuple[float, float] = (1.0, 99.0),
    per: str = "global",
) -> xr.DataArray:
    """Scale modality values for machine learning, lazily, float32.

    Parameters
    ----------
    obj : xarray.DataArray
        Stored or modality values (stored values are converted first).
    min_bound, max_bound : float, None or "auto", default "auto"
        Bounds in modality units (HU for CT). ``"auto"`` follows the data: for values in
        HU (CT) :data:`CT_NORMALIZE_BOUNDS` (-1000, 400); for anything else (MR, PET,
        values with unspecified units) no bound, since an HU range would clip them
        arbitrarily. ``None`` is no bound on that side: ``method="bounds"`` then scales
        from the values' own minimum (or to their maximum), ``"zscore"`` does not clip.
    method : {"bounds", "percentile", "zscore"}
        ``"bounds"``: clip to the bounds and scale to [0, 1]. ``"percentile"``: the same
        with the bounds replaced by ``percentiles`` of the values, robust to a few
        extreme voxels (approximate when a dask array has several chunks: dask merges
        per-chunk percentiles). ``"zscore"``: clip to the bounds, then subtract the mean
        and divide by the standard deviation of the clipped values (both over the whole
        array).
    percentiles : tuple of float, default (1, 99)
        Lower and upper percentiles for ``method="percentile"``.
    per : {"global", "volume"}, default "global"
        Where the statistics the method takes from the values (value range, percentiles,
        mean and standard deviation) are computed, for a volume with dims beyond
        ``(z, y, x)`` (``t``, ``echo``, ...): ``"global"`` over the whole array, so that
        every volume is scaled alike and a change between volumes (a contrast bolus
        through a perfusion series) stays visible; ``"volume"`` over each volume (each
        index of the other dims) alone, so that every volume uses the full range. Fixed
        bounds are the same either way; a 3-D volume gives the same result either way.

    Returns
    -------
    xarray.DataArray
        ``attrs["dicomarray_normalize"]`` records the method, the bounds (``min_bound``,
        ``max_bound``: numbers, or None where the values' range was used or no bound
        applied), where they came from (``bounds_from``: "arguments", "CT default (HU)",
        "value range" (bounds) or "none" (zscore), per side when they differ) and the
        numbers computed from the values when they are in memory (``low``, ``high``,
        ``mean``, ``std``; with ``per="volume"`` nested lists, one number per volume in
        the order of the other dims) and ``per``;
        ``units="1"``, ``dicomarray_values="normalized"``. NaN (masked padding, see
        :func:`modality_values`) stays NaN and is left out of ranges, percentiles and
        statistics.

    Raises
    ------
    TransformError
        For an unknown method or ``per``, bounds that are not numbers or not increasing,
        or percentiles outside [0, 100] or not increasing.

    Examples
    --------
    Two volumes along ``t``, one from 0 to 100 HU and one from 0 to 200 HU:
    ``normalize(None, None)`` maps the first to [0, 0.5] and the second to [0, 1];
    ``normalize(None, None, per="volume")`` maps each to [0, 1].
    """
    if method not in _NORMALIZERS:
        raise TransformError(f"unknown normalize method {method!r}; use one of {NORMALIZE_METHODS}")
    if per not in NORMALIZE_PER:
        raise TransformError(f"unknown normalize per={per!r}; use one of {NORMALIZE_PER}")
    values = modality_values(obj)
    in_hu = values.attrs.get("units") == "HU"
    bounds = _resolve_bounds(min_bound, max_bound, in_hu=in_hu, unbounded=_UNBOUNDED[method])
    axes = _volume_axes(values) if per == "volume" else None
    out, record = _NORMALIZERS[method](values.data, bounds, percentiles, axes)
    return _with_values(
        values,
        out,
        _WINDOW_ATTRS,
        _WINDOW_COORDS,
        units="1",
        kind="normalized",
        **{NORMALIZE_ATTR: {"method": method, "per": per, **record}},
    )


#: The choices of ``normalize(per=...)``.
NORMALIZE_PER = ("global", "volume")
#: The dims one volume spans; statistics ``per="volume"`` are taken over these.
VOLUME_DIMS = ("z", "y", "x", "channel")


def _volume_axes(obj: xr.DataArray) -> tuple[int, ...] | None:
    """The axes of the dims of one volume, or None when there are no others (3-D)."""
    axes = tuple(i for i, d in enumerate(obj.dims) if d in VOLUME_DIMS)
    return axes if len(axes) < obj.ndim else None


@dataclass(frozen=True)
class _Bounds:
    """Resolved ``normalize`` bounds: a number or None (no bound) each, and their source."""

    low: float | None
    high: float | None
    source: str

    def describe(self) -> dict[str, Any]:
        return {"min_bound": self.low, "max_bound": self.high, "bounds_from": self.source}


def _resolve_bounds(low: Bound, high: Bound, *, in_hu: bool, unbounded: str) -> _Bounds:
    """Turn "auto" into the data's defaults and check the numbers.

    ``unbounded`` names what the method does on a side without a bound, for the record.
    """
    sides = [
        _resolve_bound(value, default, keyword, in_hu=in_hu, unbounded=unbounded)
        for value, default, keyword in zip(
            (low, high), CT_NORMALIZE_BOUNDS, ("min_bound", "max_bound"), strict=True
        )
    ]
    (low_value, low_source), (high_value, high_source) = sides
    if low_value is not None and high_value is not None and not low_value < high_value:
        raise TransformError(f"min_bound must be below max_bound, got {low_value} and {high_value}")
    source = low_source if low_source == high_source else f"{low_source} (min), {high_source} (max)"
    return _Bounds(low_value, high_value, source)


def _resolve_bound(
    value: Bound, default: float, keyword: str, *, in_hu: bool, unbounded: str
) -> tuple[float | None, str]:
    if isinstance(value, str) and value == AUTO:
        return (default, "CT default (HU)") if in_hu else (None, unbounded)
    if value is None:
        return None, unbounded
    return _number(value, keyword), "arguments"


Axes = tuple[int, ...] | None  # reduce over these (keeping them, to broadcast), or all


def _by_bounds(data: Any, bounds: _Bounds, _: Any, axes: Axes) -> tuple[Any, dict[str, Any]]:
    # no bound on a side: scale from (or to) the values' own extreme there
    low = bounds.low if bounds.low is not None else _reduce(np.nanmin, data, axes)
    high = bounds.high if bounds.high is not None else _reduce(np.nanmax, data, axes)
    record = bounds.describe()
    if bounds.low is None or bounds.high is None:
        record.update(_numbers(axes, low=low, high=high))
    return scale_to_unit(data, low, high), record


def _by_percentiles(
    data: Any, _: _Bounds, percentiles: Any, axes: Axes
) -> tuple[Any, dict[str, Any]]:
    low, high = _percentile_bounds(data, percentiles, axes)
    record = {"percentiles": [float(p) for p in percentiles], **_numbers(axes, low=low, high=high)}
    return scale_to_unit(data, low, high), record


def _by_zscore(data: Any, bounds: _Bounds, _: Any, axes: Axes) -> tuple[Any, dict[str, Any]]:
    unbounded = bounds.low is None and bounds.high is None
    clipped = data if unbounded else np.clip(data, bounds.low, bounds.high)
    mean, std = _mean_std(clipped, axes)
    record = {**bounds.describe(), **_numbers(axes, mean=mean, std=std)}
    return standardize(clipped, mean, std), record


def _reduce(function: Callable[..., Any], data: Any, axes: Axes, **kwargs: Any) -> Any:
    """``function`` over ``axes`` (kept, to broadcast against ``data``), or over everything."""
    if axes is None:
        return function(data, **kwargs)
    return function(data, axis=axes, keepdims=True, **kwargs)


_NORMALIZERS: dict[str, Callable[..., tuple[Any, dict[str, Any]]]] = {
    "bounds": _by_bounds,
    "percentile": _by_percentiles,
    "zscore": _by_zscore,
}
# what each method does on a side without a bound, as the record says it
_UNBOUNDED = {"bounds": "value range", "percentile": "percentiles", "zscore": "none"}


def _percentile_bounds(data: Any, percentiles: Sequence[float], axes: Axes) -> tuple[Any, Any]:
    q = [float(p) for p in percentiles]
    if len(q) != 2 or not 0 <= q[0] < q[1] <= 100:
        raise TransformError(f"percentiles must be two increasing numbers in [0, 100], got {q}")
    if not _is_lazy(data):
        bounds = _reduce(np.nanpercentile, np.asarray(data), axes, q=q)
        return (float(bounds[0]), float(bounds[1])) if axes is None else (bounds[0], bounds[1])
    import dask.array

    if axes is None:
        return _lazy_percentiles(data, q)
    # dask's percentile is 1-D: one per volume, each over that volume's values only
    moved = dask.array.moveaxis(data, axes, tuple(range(-len(axes), 0)))
    outer = moved.shape[: moved.ndim - len(axes)]
    pairs = [_lazy_percentiles(moved[index], q) for index in np.ndindex(*outer)]
    kept = [1 if i in axes else n for i, n in enumerate(data.shape)]
    return tuple(dask.array.stack([pair[k] for pair in pairs]).reshape(kept) for k in (0, 1))


def _lazy_percentiles(data: Any, q: list[float]) -> tuple[Any, Any]:
    """Two percentiles of a dask array's non-NaN values, lazily (approximate per chunk)."""
    import dask.array

    flat = data.ravel()
    bounds = dask.array.percentile(flat[~dask.array.isnan(flat)], q)
    return bounds[0], bounds[1]


def _mean_std(data: Any, axes: Axes) -> tuple[Any, Any]:
    # float64 accumulators give an accurate scalar without a float64 copy of the values;
    # NaN (masked padding) is left out of both
    count = np.maximum(_reduce(np.sum, ~np.isnan(data), axes), 1)
    mean = _reduce(np.nansum, data, axes, dtype=np.float64) / count
    mean_square = _reduce(np.nansum, data * data, axes, dtype=np.float64) / count
    return mean, np.sqrt(np.maximum(mean_square - mean * mean, 0.0))


def _numbers(axes: Axes, **values: Any) -> dict[str, Any]:
    """The values that are in memory already (lazy ones are not computed for attrs): a
    number each, or with ``axes`` (per volume) nested lists, one number per volume."""
    return {
        k: float(v) if axes is None else np.squeeze(np.asarray(v, np.float64), axes).tolist()
        for k, v in values.items()
        if not _is_lazy(v)
    }
