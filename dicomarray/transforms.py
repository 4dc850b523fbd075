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

from .errors import TransformError
from .header import read_dataset

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
#: What the values of a DataArray are, once a transform ran: "modality", "window" or
#: "normalized" (absent: stored values).
VALUES_ATTR = "dicomarray_values"
#: The window :func:`window` applied, as a JSON-safe dict.
WINDOW_ATTR = "dicomarray_window"
#: The normalization :func:`normalize` applied, as a JSON-safe dict.
NORMALIZE_ATTR = "dicomarray_normalize"

_RESCALE_ATTRS = ("RescaleSlope", "RescaleIntercept", "RescaleType", "ModalityLUTSequence")
_RESCALE_COORDS = ("rescale_slope", "rescale_intercept", "rescale_type")
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


def modality_values(obj: xr.DataArray) -> xr.DataArray:
    """Modality values (Hounsfield units for CT) as a lazy float32 DataArray.

    A (0028,3000) *Modality LUT Sequence* in the attrs takes precedence; otherwise each
    slice's own (0028,1053) *Rescale Slope* and (0028,1052) *Rescale Intercept* apply (the
    coordinates ``rescale_slope`` / ``rescale_intercept`` when they vary, else the attrs;
    missing means 1 and 0).

    Parameters
    ----------
    obj : xarray.DataArray
        Stored values, as :func:`dicomarray.open_series` returns them, or any selection.

    Returns
    -------
    xarray.DataArray
        float32 values with ``attrs["units"]`` ("HU" for CT, else the (0028,1054) *Rescale
        Type* or (0028,3004) *Modality LUT Type*, or "unspecified") and
        ``attrs["dicomarray_values"] = "modality"``. The rescale attrs and coordinates are
        gone: they no longer describe the values. Data already in HU (``units == "HU"``) or
        already converted is returned unchanged.

    Raises
    ------
    TransformError
        If the values are already windowed or normalized, a rescale value is not a number,
        or a Modality LUT is declared but its data cannot be read.

    Notes
    -----
    A Modality LUT is read from the first file of the series (header only) and applied to
    every slice: per-slice LUTs are not supported.
    """
    state = obj.attrs.get(VALUES_ATTR)
    if state in ("window", "normalized"):
        done = "windowed" if state == "window" else "normalized"
        raise TransformError(f"the values are already {done}; take HU from stored values")
    if state == "modality" or obj.attrs.get("units") == "HU":
        return obj
    lut = _modality_lut(obj)
    if lut is not None:
        table, first_mapped, declared = lut
        data = _blockwise(obj.data, apply_lut, table=table, first_mapped=first_mapped)
    else:
        slope = _per_slice(obj, "rescale_slope", "RescaleSlope", 1.0)
        intercept = _per_slice(obj, "rescale_intercept", "RescaleIntercept", 0.0)
        from .lazy import rescaled_frames  # deferred: dask.array is slow to import

        declared = obj.attrs.get("RescaleType")
        data = rescaled_frames(obj.data, slope, intercept)  # whole series: rescale as read
        if data is None:
            data = rescale(obj.data, slope, intercept)
    units = _modality_units(obj.attrs, declared)
    return _with_values(obj, data, _RESCALE_ATTRS, _RESCALE_COORDS, units=units, kind="modality")


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


def _blockwise(data: Any, function: Callable[..., np.ndarray], **kwargs: Any) -> Any:
    if hasattr(data, "map_blocks"):  # dask: one call per chunk, lazily
        return data.map_blocks(function, dtype=np.float32, **kwargs)
    return function(np.asarray(data), **kwargs)


def _per_slice(obj: xr.DataArray, coord: str, keyword: str, default: float) -> Any:
    """A rescale value per slice (a float32 array that broadcasts against ``obj.data``)."""
    if coord not in obj.coords:
        return np.float32(_number(obj.attrs.get(keyword, default), keyword))
    values = obj.coords[coord]
    values = values.transpose(*[d for d in obj.dims if d in values.dims])
    try:
        numbers = np.asarray(values.values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TransformError(f"coordinate {coord} holds values that are not numbers") from exc
    numbers = np.where(np.isfinite(numbers), numbers, default)
    shape = [obj.sizes[d] if d in values.dims else 1 for d in obj.dims]
    return numbers.astype(np.float32).reshape(shape)


def _number(value: Any, keyword: str) -> float:
    if isinstance(value, list):  # a multi-valued attr: DICOM allows one value here
        value = value[0] if value else None
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise TransformError(f"{keyword} {value!r} is not a number") from exc


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
    item = dataset.ModalityLUTSequence[0]
    entries, first_mapped = int(item.LUTDescriptor[0]) or 2**16, int(item.LUTDescriptor[1])
    # pydicom decodes the LUT (US or OW, either byte order); asking it for every input
    # value once gives the table in its own semantics
    inputs = np.arange(first_mapped, first_mapped + entries, dtype=np.int64)
    table = np.asarray(apply_modality_lut(inputs, dataset), dtype=np.float32)
    return table, first_mapped, item.get("ModalityLUTType")


def _lut_dataset(obj: xr.DataArray) -> Any:
    """A pydicom Dataset holding the Modality LUT Sequence with its LUT Data."""
    from pydicom.dataset import Dataset

    item = obj.attrs["ModalityLUTSequence"][0]
    if isinstance(item.get("LUTData"), list):  # LUT Data with VR US survives in the attrs
        dataset, lut = Dataset(), Dataset()
        for keyword in ("LUTDescriptor", "LUTData", "ModalityLUTType"):
            if keyword in item:
                setattr(lut, keyword, item[keyword])
        dataset.ModalityLUTSequence = [lut]
        return dataset
    # LUT Data with VR OW is binary and not kept in the attrs: read the first file's header
    files = obj.attrs.get("dicomarray_assembly", {}).get("files", [])
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
    declared = obj.attrs.get("VOILUTFunction")
    chosen = function or (declared if declared in WINDOW_FUNCTIONS else "LINEAR")
    if chosen == "LINEAR" and width < 1:  # invalid for LINEAR; the exact function is meant
        chosen = "LINEAR_EXACT"
    explanation = _first_values(obj, "WindowCenterWidthExplanation", "", numbers=False)
    label = f"series window ({explanation[0]})" if explanation and explanation[0] else "series"
    return Window(center, width, chosen, label)


def _first_values(obj: xr.DataArray, keyword: str, coord: str, *, numbers: bool = True) -> list:
    """The first value of a multi-valued tag, per slice when it varies, else once."""
    if coord and coord in obj.coords:
        raw = list(np.atleast_1d(obj.coords[coord].values))
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


def normalize(
    obj: xr.DataArray,
    min_bound: float | None = -1000.0,
    max_bound: float | None = 400.0,
    *,
    method: str = "bounds",
    percentiles: tuple[float, float] = (1.0, 99.0),
) -> xr.DataArray:
    """Scale modality values for machine learning, lazily, float32.

    Parameters
    ----------
    obj : xarray.DataArray
        Stored or modality values (stored values are converted first).
    min_bound, max_bound : float, default -1000 and 400
        Bounds in modality units (HU for CT).
    method : {"bounds", "percentile", "zscore"}
        ``"bounds"``: clip to the bounds and scale to [0, 1]. ``"percentile"``: the same
        with the bounds replaced by ``percentiles`` of the values (approximate when a dask
        array has several chunks: dask merges per-chunk percentiles). ``"zscore"``: clip to
        the bounds (``None`` for no bound), then subtract the mean and divide by the
        standard deviation of the clipped values (both over the whole array).
    percentiles : tuple of float, default (1, 99)
        Lower and upper percentiles for ``method="percentile"``.

    Returns
    -------
    xarray.DataArray
        ``attrs["dicomarray_normalize"]`` records the method and its parameters (and the
        numbers used, when the data are in memory); ``units="1"``,
        ``dicomarray_values="normalized"``.

    Raises
    ------
    TransformError
        For an unknown method, bounds that are not increasing, or percentiles outside
        [0, 100] or not increasing.
    """
    if method not in _NORMALIZERS:
        raise TransformError(f"unknown normalize method {method!r}; use one of {NORMALIZE_METHODS}")
    values = modality_values(obj)
    out, record = _NORMALIZERS[method](values.data, min_bound, max_bound, percentiles)
    return _with_values(
        values,
        out,
        _WINDOW_ATTRS,
        _WINDOW_COORDS,
        units="1",
        kind="normalized",
        **{NORMALIZE_ATTR: {"method": method, **record}},
    )


def _by_bounds(data: Any, low: Any, high: Any, _: Any) -> tuple[Any, dict[str, Any]]:
    low, high = _check_bounds(low, high, required=True)
    return scale_to_unit(data, low, high), {"min_bound": low, "max_bound": high}


def _by_percentiles(data: Any, _: Any, __: Any, percentiles: Any) -> tuple[Any, dict[str, Any]]:
    low, high = _percentile_bounds(data, percentiles)
    record = {"percentiles": [float(p) for p in percentiles], **_numbers(low=low, high=high)}
    return scale_to_unit(data, low, high), record


def _by_zscore(data: Any, low: Any, high: Any, _: Any) -> tuple[Any, dict[str, Any]]:
    low, high = _check_bounds(low, high, required=False)
    clipped = data if low is None and high is None else np.clip(data, low, high)
    mean, std = _mean_std(clipped)
    record = {"min_bound": low, "max_bound": high, **_numbers(mean=mean, std=std)}
    return standardize(clipped, mean, std), record


_NORMALIZERS: dict[str, Callable[..., tuple[Any, dict[str, Any]]]] = {
    "bounds": _by_bounds,
    "percentile": _by_percentiles,
    "zscore": _by_zscore,
}


def _check_bounds(
    low: float | None, high: float | None, *, required: bool
) -> tuple[float | None, float | None]:
    if required and (low is None or high is None):
        raise TransformError("normalize needs both min_bound and max_bound")
    low = None if low is None else _number(low, "min_bound")
    high = None if high is None else _number(high, "max_bound")
    for bound in (low, high):
        if bound is not None and not math.isfinite(bound):
            raise TransformError(f"normalize bounds must be finite, got {low}, {high}")
    if low is not None and high is not None and not low < high:
        raise TransformError(f"min_bound must be below max_bound, got {low} and {high}")
    return low, high


def _percentile_bounds(data: Any, percentiles: Sequence[float]) -> tuple[Any, Any]:
    q = [float(p) for p in percentiles]
    if len(q) != 2 or not 0 <= q[0] < q[1] <= 100:
        raise TransformError(f"percentiles must be two increasing numbers in [0, 100], got {q}")
    if _is_lazy(data):
        import dask.array

        bounds = dask.array.percentile(data.ravel(), q)
        return bounds[0], bounds[1]
    bounds = np.percentile(np.asarray(data), q)
    return float(bounds[0]), float(bounds[1])


def _mean_std(data: Any) -> tuple[Any, Any]:
    # float64 accumulators give an accurate scalar without a float64 copy of the values
    count = max(int(np.prod(data.shape)), 1)
    mean = data.sum(dtype=np.float64) / count
    mean_square = (data * data).sum(dtype=np.float64) / count
    return mean, np.sqrt(np.maximum(mean_square - mean * mean, 0.0))


def _numbers(**values: Any) -> dict[str, float]:
    """The values that are plain numbers already (lazy ones are not computed for attrs)."""
    return {k: float(v) for k, v in values.items() if not _is_lazy(v)}
