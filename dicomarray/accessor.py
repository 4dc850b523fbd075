"""The ``.dicom`` accessor on DataArrays: thin methods over the geometry, transforms and writers.

Every xarray operation makes a new accessor object, so nothing is stored here: all state
lives in the DataArray's coordinates and attrs.

Every public method names the series at the end of any error it raises ("...; in series
2 "HEAD" (UID ..., folder ...)", see :func:`dicomarray.labels.series_label`): the attrs
it reads may come from any file, or from a store written long ago, and a user with many
series needs to know which one was malformed. Other exceptions (a malformed value no
check caught, a failure inside a dask task while writing) leave as a
:class:`~dicomarray.errors.DicomArrayError` whose ``__cause__`` is the original, so that
only the package's errors leave the API. A call with wrong arguments stays a TypeError.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import numpy as np
import xarray as xr

from . import render, reorient, resample, transforms
from .errors import DicomArrayError
from .geometry import VolumeGeometry
from .labels import series_label

if TYPE_CHECKING:
    from .deid import Deidentifier

_Method = TypeVar("_Method", bound=Callable[..., Any])


def _naming_the_series(method: _Method) -> _Method:
    """Make ``method`` raise only DicomArrayErrors, each naming the accessor's series."""

    signature = inspect.signature(method)

    @functools.wraps(method)
    def wrapper(self: DicomAccessor, *args: Any, **kwargs: Any) -> Any:
        signature.bind(self, *args, **kwargs)  # a wrong call stays a TypeError
        try:
            return method(self, *args, **kwargs)
        except DicomArrayError as exc:
            label = series_label(self._obj.attrs)
            if label not in str(exc):  # an inner accessor call named it already
                exc.args = (f"{exc}; in {label}", *exc.args[1:])
            raise
        except Exception as exc:
            label = series_label(self._obj.attrs)
            failure = f"{method.__name__} failed: {type(exc).__name__}: {exc}"
            raise DicomArrayError(f"{failure}; in {label}") from exc

    return cast(_Method, wrapper)


@xr.register_dataarray_accessor("dicom")
class DicomAccessor:
    """DICOM-aware views of a ``(*extra, z, y, x)`` volume from :func:`dicomarray.open_series`."""

    def __init__(self, obj: xr.DataArray) -> None:
        self._obj = obj

    @property
    def metadata(self) -> dict[str, Any]:
        """The series' common tags and assembly report: a copy of the attrs."""
        return dict(self._obj.attrs)

    @property
    @_naming_the_series
    def affine(self) -> np.ndarray:
        """4 x 4 matrix from indices of the spatial dims, in the array's order (plus 1), to
        LPS mm.

        For the ``(z, y, x)`` volume :func:`~dicomarray.open_series` gives, ``(z, y, x, 1)``
        indices; extra dims (``t``, ``echo``, ...) are left out, as every volume of an
        n-D series lies at the same positions. Built by :attr:`geometry` from (0020,0037)
        *Image Orientation (Patient)*, (0028,0030) *Pixel Spacing* and the per-slice
        position coordinates, so it follows any selection, flip or transpose. For a tilted
        (sheared) stack it maps the first slice's plane and the mean step between slices.

        Raises
        ------
        DicomArrayError
            Without dims ``z``, ``y`` and ``x``, or for an orientation or pixel spacing that
            is not six or two finite numbers; the message names the series.
        """
        return self.geometry.affine()

    @property
    @_naming_the_series
    def geometry(self) -> VolumeGeometry:
        """Where every voxel lies: spacing, slice steps, directions, tilt, affine.

        See :class:`dicomarray.geometry.VolumeGeometry`; built from the coords and attrs,
        so it follows any selection, flip or transpose of the volume.
        """
        return VolumeGeometry.of(self._obj)

    # -- values: thin doors onto dicomarray.transforms ---------------------------------------

    @_naming_the_series
    def hu(self, *, padding: str | float = "nan") -> xr.DataArray:
        """Hounsfield units (modality values for other modalities), lazy float32.

        Uses each slice's (0028,1053) *Rescale Slope* and (0028,1052) *Rescale Intercept*,
        or a (0028,3000) *Modality LUT Sequence*, which takes precedence. Data already in HU
        is returned unchanged. Select slices before converting: dask cannot push a later
        selection into the file reads.

        Parameters
        ----------
        padding : "nan", "keep" or float, default "nan"
            Pixels the series marks as padding ((0028,0120) *Pixel Padding Value*, with
            (0028,0121) *Pixel Padding Range Limit*) become NaN, that value, or stay as
            rescaled ("keep"); ``attrs["dicomarray_padding"]`` records what was done.

        See :func:`dicomarray.transforms.modality_values`.
        """
        return transforms.modality_values(self._obj, padding=padding)

    @_naming_the_series
    def padding_mask(self) -> xr.DataArray:
        """Where the pixels are padding, lazy boolean (all False when none is declared).

        (0028,0120) *Pixel Padding Value*, with (0028,0121) *Pixel Padding Range Limit*,
        on stored values. See :func:`dicomarray.transforms.padding_mask`.
        """
        return transforms.padding_mask(self._obj)

    @_naming_the_series
    def window(
        self,
        center: float | None = None,
        width: float | None = None,
        *,
        preset: str | None = None,
        function: str | None = None,
    ) -> xr.DataArray:
        """The DICOM VOI window to [0, 1], lazy float32, on stored values or HU.

        Parameters
        ----------
        center, width : float, optional
            (0028,1050) *Window Center* and (0028,1051) *Window Width* in HU; default the
            series' own (first value), else a preset for the modality.
        preset : str, optional
            A name in :data:`dicomarray.transforms.WINDOW_PRESETS` ("brain", "subdural",
            "stroke", "bone", "soft_tissue", "lung", ...).
        function : {"LINEAR", "LINEAR_EXACT", "SIGMOID"}, optional
            (0028,1056) *VOI LUT Function*; default the series' own, else LINEAR.

        See :func:`dicomarray.transforms.window`; ``attrs["dicomarray_window"]`` says which
        window was applied.
        """
        return transforms.window(self._obj, center, width, preset=preset, function=function)

    @_naming_the_series
    def normalize(
        self,
        min_bound: transforms.Bound = transforms.AUTO,
        max_bound: transforms.Bound = transforms.AUTO,
        *,
        method: str = "bounds",
        percentiles: tuple[float, float] = (1.0, 99.0),
        per: str = "global",
    ) -> xr.DataArray:
        """Clip to bounds and scale to [0, 1] (or percentile bounds, or z-scores).

        By default the bounds follow the data: (-1000, 400) for CT in HU, the range of the
        values otherwise; ``attrs["dicomarray_normalize"]`` says what was done. ``method``
        is "bounds", "percentile" or "zscore". For a volume with dims beyond ``(z, y, x)``
        (``t``, ``echo``, ...), ``per="global"`` (the default) takes the statistics over
        all volumes alike, ``per="volume"`` over each volume alone. See
        :func:`dicomarray.transforms.normalize`.
        """
        return transforms.normalize(
            self._obj, min_bound, max_bound, method=method, percentiles=percentiles, per=per
        )

    # -- orientation: thin doors onto dicomarray.reorient ------------------------------------

    @_naming_the_series
    def orientation_code(self) -> str:
        """Patient direction of each axis, fastest first: ``"LPS"`` for a plain axial.

        See :func:`dicomarray.reorient.orientation_code`.
        """
        return reorient.orientation_code(self._obj)

    @_naming_the_series
    def reorient(self, code: str = "RAS") -> xr.DataArray:
        """Lazy flips and transposes to the orientation closest to ``code``.

        A feet-first and a head-first series of one patient come out alike. See
        :func:`dicomarray.reorient.reorient`.
        """
        return reorient.reorient(self._obj, code)

    # -- new grids: thin doors onto dicomarray.resample -------------------------------------

    @_naming_the_series
    def resample(self, spacing: Any, *, method: str = "linear") -> xr.DataArray:
        """Lazily onto a regular grid of ``spacing`` mm (z, y, x) along the volume's own
        directions: a rotation-only affine over the same extent.

        ``method`` is "linear", "nearest" or "cubic". See :func:`dicomarray.resample.resample`.
        """
        return resample.resample(self._obj, spacing, method=method)

    @_naming_the_series
    def equalize(self, *, method: str = "linear") -> xr.DataArray:
        """An irregular stack on its finest regular slice step (dcm2niix ``_Eq``); a
        regular one comes back as it is. See :func:`dicomarray.resample.equalize`.
        """
        return resample.equalize(self._obj, method=method)

    @_naming_the_series
    def detilt(self, *, method: str = "linear") -> xr.DataArray:
        """Each slice shifted in-plane to remove gantry-tilt shear (dcm2niix ``_Tilt``); an
        untilted stack comes back as it is. See :func:`dicomarray.resample.detilt`.
        """
        return resample.detilt(self._obj, method=method)

    # -- pictures: thin doors onto dicomarray.render -----------------------------------------

    @_naming_the_series
    def to_jpg(
        self,
        path: str | os.PathLike[str],
        index: int | None = None,
        *,
        axis: str | None = None,
        select: dict[str, int] | None = None,
        center: float | None = None,
        width: float | None = None,
        preset: str | None = None,
        annotate: bool = False,
        quality: int = 95,
        overwrite: bool = False,
    ) -> Path:
        """Write one slice as a JPG (or PNG, by suffix) with its physical aspect.

        Parameters
        ----------
        path : str or os.PathLike
            ``.jpg``, ``.jpeg`` or ``.png``; written atomically.
        index : int, optional
            Position along ``axis``; default the middle slice.
        axis : {"axial", "coronal", "sagittal"}, optional
            A ``z``, ``y`` or ``x`` slice; default axial (for a 2-D slice, its own plane).
        select : dict of str to int, optional
            For a volume with dims beyond ``(z, y, x)``: the volume shown, by index along
            each (``{"t": 3}``); a dim not named shows its first volume, with a warning.
        center, width, preset
            The window, as for :meth:`window`.
        annotate : bool, default False
            Patient directions (L/R, A/P, S/I) on the edges and the slice position in mm.
        quality : int, default 95
            JPG quality, 1 to 100.
        overwrite : bool, default False
            Replace an existing file; otherwise it is a
            :class:`~dicomarray.errors.WriteError`.

        Only the files the slice needs are read. Coronal and sagittal pictures are planes
        orthogonal to the slices (a tilted series is not shown sheared), superior at the
        top. A colour volume (trailing ``"channel"`` dim) is drawn in RGB, not windowed.
        See :func:`dicomarray.render.write_slice`.
        """
        return render.write_slice(
            self._obj,
            path,
            index,
            axis=axis,
            select=select,
            center=center,
            width=width,
            preset=preset,
            annotate=annotate,
            quality=quality,
            overwrite=overwrite,
        )

    @_naming_the_series
    def montage(
        self,
        path: str | os.PathLike[str],
        indices: list[int] | None = None,
        *,
        over: str = "z",
        z: int | None = None,
        select: dict[str, int] | None = None,
        columns: int | None = None,
        center: float | None = None,
        width: float | None = None,
        preset: str | None = None,
        annotate: bool = False,
        quality: int = 95,
        overwrite: bool = False,
    ) -> Path:
        """Write axial slices in a grid (default 16 evenly spaced), one window for all,
        inferior to superior; ``annotate`` labels each tile.

        ``over="t"`` (any extra dim) shows slice ``z`` (default the middle) of each volume
        along it instead, reading only that slice of each; ``select`` picks the volume
        along the other extra dims. See :func:`dicomarray.render.write_montage`.
        """
        return render.write_montage(
            self._obj,
            path,
            indices,
            over=over,
            z=z,
            select=select,
            columns=columns,
            center=center,
            width=width,
            preset=preset,
            annotate=annotate,
            quality=quality,
            overwrite=overwrite,
        )

    @_naming_the_series
    def orthogonal(
        self,
        path: str | os.PathLike[str],
        *,
        z: int | None = None,
        y: int | None = None,
        x: int | None = None,
        select: dict[str, int] | None = None,
        center: float | None = None,
        width: float | None = None,
        preset: str | None = None,
        annotate: bool = False,
        quality: int = 95,
        overwrite: bool = False,
    ) -> Path:
        """Write axial, coronal and sagittal slices side by side through one point.

        ``z``, ``y``, ``x``: the voxel's indices (default the middle of each axis);
        ``select`` the volume of an n-D one, as for :meth:`to_jpg`; ``annotate`` labels
        each panel. See :func:`dicomarray.render.write_orthogonal`.
        """
        return render.write_orthogonal(
            self._obj,
            path,
            z=z,
            y=y,
            x=x,
            select=select,
            center=center,
            width=width,
            preset=preset,
            annotate=annotate,
            quality=quality,
            overwrite=overwrite,
        )

    # -- exports: thin doors onto dicomarray.writers -----------------------------------------

    @_naming_the_series
    def to_npy(
        self,
        path: str | os.PathLike[str],
        *,
        json_path: str | os.PathLike[str] | None = None,
        orientation: str | None = None,
        deidentify: bool = False,
        overwrite: bool = False,
        compute: bool = True,
    ) -> Any:
        """Write the values as ``.npy`` (chunk by chunk) and a JSON sidecar of the metadata,
        as stored or in an ``orientation`` such as ``"RAS"``.

        See :func:`dicomarray.writers.npy.to_npy`.
        """
        from .writers.npy import to_npy

        return to_npy(
            self._obj,
            path,
            json_path=json_path,
            orientation=orientation,
            deidentify=deidentify,
            overwrite=overwrite,
            compute=compute,
        )

    @_naming_the_series
    def to_zarr(
        self,
        store: Any,
        *,
        orientation: str | None = None,
        deidentify: bool = False,
        overwrite: bool = False,
        compute: bool = True,
        **kwargs: Any,
    ) -> Any:
        """Write a zarr (format 3) store with coordinates and attrs, for :func:`xarray.open_zarr`,
        as stored or in an ``orientation`` such as ``"RAS"``.

        See :func:`dicomarray.writers.zarr.to_zarr`.
        """
        from .writers.zarr import to_zarr

        return to_zarr(
            self._obj,
            store,
            orientation=orientation,
            deidentify=deidentify,
            overwrite=overwrite,
            compute=compute,
            **kwargs,
        )

    @_naming_the_series
    def to_nifti(
        self,
        path: str | os.PathLike[str],
        *,
        orientation: str | None = "RAS",
        equalize: bool = False,
        detilt: bool = False,
        json_path: str | os.PathLike[str] | None = None,
        deidentify: bool = False,
        overwrite: bool = False,
        compute: bool = True,
    ) -> Any:
        """Write a NIfTI-1 file, RAS by default, sform exact and qform the rotation (needs
        the ``nifti`` extra).

        See :func:`dicomarray.writers.nifti.to_nifti`.
        """
        from .writers.nifti import to_nifti

        return to_nifti(
            self._obj,
            path,
            orientation=orientation,
            equalize=equalize,
            detilt=detilt,
            json_path=json_path,
            deidentify=deidentify,
            overwrite=overwrite,
            compute=compute,
        )

    @_naming_the_series
    def to_dicom(
        self,
        out_dir: str | os.PathLike[str],
        *,
        template: Any = None,
        series_description: str | None = None,
        series_number: int | None = None,
        window: tuple[float, float] | None = None,
        deidentify: bool | Deidentifier = False,
        overwrite: bool = False,
        compute: bool = True,
    ) -> Any:
        """Write the values as a new DICOM series over a template (default: own source series).

        By default each slice goes over the file its ``source_file`` coordinate names, so
        any selection (``isel``, ``sortby``, ``where``) is written over exactly its own
        files. The values are taken in the template's rescaled units (HU for CT): convert
        stored values with :meth:`hu` first. Without ``deidentify``, every tag of the
        template (patient names, IDs, dates, private tags) is copied; with it (True or a
        :class:`~dicomarray.deid.Deidentifier`), each written data set goes through the
        PS3.15 profile. See :func:`dicomarray.writers.dicom.to_dicom`.
        """
        from .writers.dicom import to_dicom

        return to_dicom(
            self._obj,
            self._obj if template is None else template,
            out_dir,
            series_description=series_description,
            series_number=series_number,
            window=window,
            deidentify=deidentify,
            overwrite=overwrite,
            compute=compute,
        )
