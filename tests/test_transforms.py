"""HU, windows, presets and normalization: values against formulas written out here and
against pydicom's own modality LUT."""

from __future__ import annotations

import dask.array
import numpy as np
import pydicom
import pytest
import xarray as xr
from pydicom.pixels import apply_modality_lut

import dicomarray
from dicomarray.errors import DicomArrayError, TransformError
from dicomarray.transforms import (
    PRESET_SOURCES,
    WINDOW_PRESETS,
    choose_window,
    default_preset,
    linear_exact_window,
    linear_window,
    rescale,
    sigmoid_window,
    stored_padding,
)

from .conftest import hu_of, pydicom_file
from .nd_volumes import stack_volumes


def dicom_linear(x: np.ndarray, c: float, w: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1, the LINEAR function, as the standard's pseudo-code reads."""
    x = x.astype(np.float64)
    middle = ((x - (c - 0.5)) / (w - 1) + 0.5) if w > 1 else np.zeros_like(x)
    return np.where(
        x <= c - 0.5 - (w - 1) / 2, 0.0, np.where(x > c - 0.5 + (w - 1) / 2, 1.0, middle)
    )


@pytest.fixture
def series(make_series):
    return dicomarray.open_series(make_series()[0].parent)


def without(volume, *keywords):
    copy = volume.copy()
    copy.attrs = {k: v for k, v in volume.attrs.items() if k not in keywords}
    return copy


# -- pure functions -------------------------------------------------------------------------


def test_rescale_is_slope_times_stored_plus_intercept_in_float32():
    stored = np.array([[-2000, 0, 1, 4095]], dtype=np.int16)
    out = rescale(stored, 0.5, -1024.0)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, stored * 0.5 - 1024.0)


@pytest.mark.parametrize(("center", "width"), [(40, 80), (40, 1), (-600, 1500), (0.3, 2.5)])
def test_linear_window_follows_the_dicom_formula(center, width):
    x = np.linspace(center - width, center + width, 401).astype(np.float32)
    x = np.concatenate([x, np.float32([center - 0.5, center - 0.5 - (width - 1) / 2])])
    out = linear_window(x, center, width)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, dicom_linear(x, center, width), atol=1e-6)


def test_linear_exact_and_sigmoid_follow_the_dicom_formulas():
    x = np.linspace(-200, 200, 401).astype(np.float32)
    exact = np.clip((x - (40 - 80 / 2)) / 80, 0, 1)
    np.testing.assert_allclose(linear_exact_window(x, 40, 80), exact, atol=1e-6)
    sigmoid = 1 / (1 + np.exp(-4 * (x.astype(np.float64) - 40) / 80))
    np.testing.assert_allclose(sigmoid_window(x, 40, 80), sigmoid, atol=1e-6)
    assert sigmoid_window(x, 40, 80).dtype == np.float32


# -- HU -------------------------------------------------------------------------------------


def test_hu_matches_pydicom_on_ct_small():
    path = pydicom_file("CT_small.dcm")
    hu = dicomarray.open_series(path).dicom.hu()
    ds = pydicom.dcmread(path)
    assert hu.dtype == np.float32
    np.testing.assert_array_equal(hu.values[0], apply_modality_lut(ds.pixel_array, ds))
    assert hu.attrs["units"] == "HU"
    assert hu.attrs["dicomarray_values"] == "modality"
    assert not {"RescaleSlope", "RescaleIntercept"} & set(hu.attrs)


def test_hu_uses_each_slices_own_rescale(make_series):
    paths = make_series(per_slice_rescale=True)
    volume = dicomarray.open_series(paths[0].parent)
    assert "rescale_slope" in volume.coords and "rescale_intercept" in volume.coords
    hu = volume.dicom.hu()
    np.testing.assert_allclose(hu.values, hu_of(paths), atol=1e-3)
    assert not {"rescale_slope", "rescale_intercept"} & set(hu.coords)
    # a selection keeps its slices' own values, a coronal cut one value per row
    np.testing.assert_allclose(volume.isel(z=3).dicom.hu().values, hu_of(paths)[3], atol=1e-3)
    np.testing.assert_allclose(volume.isel(y=30).dicom.hu().values, hu_of(paths)[:, 30], atol=1e-3)


def test_unsigned_12_bit_storage_gives_the_same_hu(make_series, phantom):
    paths = make_series(bits_stored=12, signed=False, intercept=-1024.0)
    hu = dicomarray.open_series(paths[0].parent).dicom.hu()
    np.testing.assert_array_equal(hu.values, phantom)


def test_transforms_are_lazy_and_read_nothing(series, reads):
    results = [
        series.dicom.hu(),
        series.dicom.window(),
        series.dicom.window(preset="bone"),
        *(series.dicom.normalize(method=m) for m in ("bounds", "percentile", "zscore")),
    ]
    assert reads == []
    for result in results:
        assert isinstance(result.data, dask.array.Array)
        assert result.dtype == np.float32
        assert result.dims == ("z", "y", "x")
        assert result.name == "image"


def test_hu_on_values_already_in_hu_is_a_no_op(series):
    hu = series.dicom.hu()
    assert hu.dicom.hu() is hu
    in_memory = hu.compute()
    np.testing.assert_array_equal(in_memory.dicom.hu().values, in_memory.values)
    # values in HU from elsewhere: the units say so, there is nothing to rescale
    other = series.astype(np.float32).assign_attrs(units="HU")
    assert other.dicom.hu() is other


def test_hu_refuses_windowed_values(series):
    with pytest.raises(TransformError, match="already windowed"):
        series.dicom.window().dicom.hu()


def test_other_modalities_get_their_modality_values(series):
    mr = series.assign_attrs(Modality="MR", RescaleType="US")
    values = mr.dicom.hu()
    assert values.attrs["units"] == "unspecified"
    assert values.dicom.hu() is values


def _add_modality_lut(path, vr: str) -> None:
    """A Modality LUT that halves stored values from 100 on, beside the rescale it overrides."""
    ds = pydicom.dcmread(path)
    lut = pydicom.Dataset()
    lut.LUTDescriptor = [2000, 100, 16]
    table = (np.arange(2000) // 2).astype("<u2")
    lut.add_new("LUTData", vr, table.tobytes() if vr == "OW" else table.tolist())
    lut.ModalityLUTType = "HU"
    ds.ModalityLUTSequence = [lut]
    ds.save_as(path)


@pytest.mark.parametrize("vr", ["OW", "US"])
def test_modality_lut_sequence_takes_precedence_over_rescale(make_series, vr):
    paths = make_series()
    for path in paths:
        _add_modality_lut(path, vr)
    hu = dicomarray.open_series(paths[0].parent).dicom.hu()
    expected = [
        apply_modality_lut(pydicom.dcmread(p).pixel_array, pydicom.dcmread(p)) for p in paths
    ]
    np.testing.assert_array_equal(hu.values, np.stack(expected))
    assert hu.attrs["units"] == "HU"
    assert "ModalityLUTSequence" not in hu.attrs


# -- windows --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "center", "width"),
    [
        ("brain", 40, 80),
        ("subdural", 75, 215),
        ("stroke", 40, 40),
        ("bone", 600, 2800),
        ("soft_tissue", 50, 350),
        ("lung", -600, 1500),
    ],
)
def test_presets_have_the_usual_values_and_a_source(series, name, center, width):
    assert WINDOW_PRESETS[name] == (center, width)
    assert PRESET_SOURCES[name]
    windowed = series.dicom.window(preset=name)
    np.testing.assert_allclose(
        windowed.values, dicom_linear(series.dicom.hu().values, center, width), atol=1e-5
    )
    assert windowed.attrs["dicomarray_window"] == {
        "center": center,
        "width": width,
        "function": "LINEAR",
        "source": f"preset {name}",
    }


def test_every_preset_has_a_source():
    assert set(PRESET_SOURCES) == set(WINDOW_PRESETS)


def test_preset_names_ignore_case_spaces_and_dashes(series):
    assert choose_window(series, preset="Soft Tissue").center == 50
    assert choose_window(series, preset="soft-tissue").width == 350


def test_window_defaults_to_the_series_first_window(series):
    # the sample series says WindowCenter 40\600, WindowWidth 80\2800 (brain, bone)
    assert series.attrs["WindowCenter"] == [40.0, 600.0]
    windowed = series.dicom.window()
    expected = dicom_linear(series.dicom.hu().values, 40, 80)
    np.testing.assert_allclose(windowed.values, expected, atol=1e-6)
    record = windowed.attrs["dicomarray_window"]
    assert (record["center"], record["width"]) == (40.0, 80.0)
    assert "series" in record["source"] and "BRAIN" in record["source"]
    assert windowed.attrs["units"] == "1" and windowed.attrs["dicomarray_values"] == "window"
    assert not {"WindowCenter", "WindowWidth"} & set(windowed.attrs)


def test_window_on_hu_equals_window_on_stored_values(series):
    np.testing.assert_array_equal(
        series.dicom.hu().dicom.window(10, 500).values, series.dicom.window(10, 500).values
    )


def test_varying_windows_use_the_most_common_pair(series):
    centers = ["40\\600"] * 8 + ["50\\600"] * 4
    volume = without(series, "WindowCenter").assign_coords(window_center=("z", centers))
    assert choose_window(volume).center == 40.0


def test_window_falls_back_to_a_preset_for_the_modality(series):
    bare = without(series, "WindowCenter", "WindowWidth", "WindowCenterWidthExplanation")
    assert bare.attrs["BodyPartExamined"] == "HEAD"
    assert (choose_window(bare).center, choose_window(bare).width) == WINDOW_PRESETS["brain"]
    assert default_preset({"Modality": "CT", "BodyPartExamined": "CHEST"}) == "soft_tissue"
    assert "default" in bare.dicom.window().attrs["dicomarray_window"]["source"]


def test_other_modalities_without_a_window_use_the_value_range(series):
    mr = without(series, "WindowCenter", "WindowWidth").assign_attrs(Modality="MR")
    windowed = mr.dicom.window()
    assert windowed.attrs["dicomarray_window"]["source"] == "value range"
    values = windowed.values
    assert values.min() == 0.0 and values.max() == 1.0
    hu = mr.dicom.hu().values
    np.testing.assert_allclose(values, (hu - hu.min()) / (hu.max() - hu.min()), atol=1e-6)


def test_voi_lut_function_of_the_series_is_used(series):
    sigmoid = series.assign_attrs(VOILUTFunction="SIGMOID").dicom.window()
    assert sigmoid.attrs["dicomarray_window"]["function"] == "SIGMOID"
    np.testing.assert_allclose(
        sigmoid.values, sigmoid_window(series.dicom.hu().values, 40, 80), atol=1e-6
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"center": 40, "width": 0}, "width"),
        ({"center": 40, "width": -80}, "width"),
        ({"center": 40, "width": float("nan")}, "width"),
        ({"center": 40, "width": 0.5}, "at least 1"),
        ({"center": 40}, "both"),
        ({"preset": "brian"}, "unknown window preset"),
        ({"preset": "brain", "center": 40, "width": 80}, "not both"),
        ({"center": 40, "width": 80, "function": "CUBIC"}, "VOI LUT function"),
    ],
)
def test_bad_windows_raise_clear_errors(series, kwargs, message):
    with pytest.raises(DicomArrayError, match=message):
        series.dicom.window(**kwargs)


def test_narrow_windows_work_with_linear_exact(series):
    # integer HU: 0.25 .. 0.75 separates values <= 0 from values >= 1
    values = series.dicom.window(0.5, 0.5, function="LINEAR_EXACT").values
    np.testing.assert_array_equal(values, series.dicom.hu().values >= 1)


# -- normalization --------------------------------------------------------------------------


def test_normalize_clips_to_the_bounds_and_scales(series):
    hu = series.dicom.hu().values
    out = series.dicom.normalize()
    np.testing.assert_allclose(out.values, np.clip((hu + 1000) / 1400, 0, 1), atol=1e-6)
    assert out.attrs["dicomarray_normalize"] == {
        "method": "bounds",
        "per": "global",
        "min_bound": -1000.0,
        "max_bound": 400.0,
        "bounds_from": "CT default (HU)",
    }
    assert series.dicom.normalize(-100, 100).attrs["dicomarray_normalize"]["bounds_from"] == (
        "arguments"
    )
    np.testing.assert_allclose(
        series.dicom.normalize(-100, 100).values, np.clip((hu + 100) / 200, 0, 1), atol=1e-6
    )


def test_normalize_by_percentiles(make_series):
    folder = make_series()[0].parent
    hu = dicomarray.open_series(folder).dicom.hu().values
    low, high = np.percentile(hu, [2, 98])
    expected = np.clip((hu - low) / (high - low), 0, 1)
    one_chunk = dicomarray.open_series(folder).dicom.normalize(
        method="percentile", percentiles=(2, 98)
    )
    np.testing.assert_allclose(one_chunk.values, expected, atol=1e-5)
    # with several chunks dask merges per-chunk percentiles: close, not exact
    chunked = dicomarray.open_series(folder, chunks=3)
    assert len(chunked.chunks[0]) == 4
    out = chunked.dicom.normalize(method="percentile", percentiles=(2, 98)).values
    assert np.abs(out - expected).mean() < 0.01


def test_normalize_zscore(series):
    hu = series.dicom.hu().values.astype(np.float64)
    clipped = np.clip(hu, -1000, 400)
    expected = (clipped - clipped.mean()) / clipped.std()
    out = series.dicom.normalize(method="zscore")
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.values, expected, atol=1e-4)
    unclipped = series.dicom.normalize(None, None, method="zscore").values
    np.testing.assert_allclose(unclipped, (hu - hu.mean()) / hu.std(), atol=1e-4)
    in_memory = series.compute().dicom.normalize(method="zscore")
    assert in_memory.attrs["dicomarray_normalize"]["mean"] == pytest.approx(clipped.mean())


def test_normalize_follows_the_data_outside_ct(make_series, phantom):
    # an MR-like series: values 0..~4000 with no HU meaning; HU bounds would clip most
    tags = {"Modality": "MR", "RescaleType": "US"}  # "US": unspecified units
    mr = make_series(hu=phantom + 1024, intercept=0.0, signed=False, tags=tags)
    volume = dicomarray.open_series(mr[0].parent)
    values = volume.dicom.hu().values
    assert (values > 400).mean() > 0.2  # what the old HU default clipped to 1
    out = volume.dicom.normalize()
    expected = (values - values.min()) / (values.max() - values.min())
    np.testing.assert_allclose(out.values, expected, atol=1e-6)
    assert out.values.min() == 0.0 and out.values.max() == 1.0
    lazy_record = out.attrs["dicomarray_normalize"]
    assert lazy_record == {
        "method": "bounds",
        "per": "global",
        "min_bound": None,
        "max_bound": None,
        "bounds_from": "value range",
    }
    in_memory = volume.compute().dicom.normalize(max_bound=1000).attrs["dicomarray_normalize"]
    assert in_memory["bounds_from"] == "value range (min), arguments (max)"
    assert in_memory["low"] == values.min() and in_memory["max_bound"] == 1000.0
    # z-scores outside CT do not clip
    zscore = volume.dicom.normalize(method="zscore")
    np.testing.assert_allclose(zscore.values, (values - values.mean()) / values.std(), atol=1e-4)
    assert zscore.attrs["dicomarray_normalize"]["bounds_from"] == "none"


def test_explicit_none_bounds_use_the_value_range_on_that_side(series):
    hu = series.dicom.hu().values
    out = series.dicom.normalize(None, 400).values
    np.testing.assert_allclose(out, np.clip((hu - hu.min()) / (400 - hu.min()), 0, 1), atol=1e-6)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_bound": 400, "max_bound": -1000},
        {"min_bound": 0, "max_bound": 0},
        {"min_bound": "low"},
        {"max_bound": float("inf")},
        {"method": "minmax"},
        {"method": "percentile", "percentiles": (99, 1)},
        {"method": "percentile", "percentiles": (0, 101)},
    ],
)
def test_bad_normalize_arguments_raise(series, kwargs):
    with pytest.raises(TransformError):
        series.dicom.normalize(**kwargs)


@pytest.mark.parametrize(
    ("declared", "message"),
    [("CUBIC", "not a VOI LUT function"), (["LINEAR", "SIGMOID"], "several values")],
)
def test_malformed_voi_lut_functions_are_refused(series, declared, message):
    with pytest.raises(TransformError, match=message):
        series.assign_attrs(VOILUTFunction=declared).dicom.window()
    # a declared function written in lower case, or as a one-item list, is still that one
    for spelling in ("sigmoid ", ["SIGMOID"]):
        chosen = choose_window(series.assign_attrs(VOILUTFunction=spelling))
        assert chosen.function == "SIGMOID"


def test_a_voi_lut_function_varying_between_slices_must_be_chosen(series):
    functions = ["LINEAR"] * 6 + ["SIGMOID"] * 6
    volume = without(series, "VOILUTFunction").assign_coords(voi_lut_function=("z", functions))
    with pytest.raises(TransformError, match="slices disagree"):
        volume.dicom.window()
    assert volume.isel(z=slice(6, None)).dicom.window().attrs["dicomarray_window"]["function"] == (
        "SIGMOID"
    )


@pytest.mark.parametrize(
    "lut",
    [
        [{"LUTDescriptor": [2000], "LUTData": [0] * 2000}],  # one value where three belong
        [{"LUTDescriptor": [4, 0, 16], "LUTData": [0, 1]}],  # shorter than it says
        ["not a data set"],
        {"LUTDescriptor": "garbage"},
    ],
)
def test_a_malformed_modality_lut_is_a_transform_error(series, lut):
    with pytest.raises(TransformError, match="Modality LUT"):
        series.assign_attrs(ModalityLUTSequence=lut).dicom.hu()


# -- padding --------------------------------------------------------------------------------

PAD_HU = -3024.0  # stored -2000 with the sample's intercept of -1024


def _padded(phantom: np.ndarray, value: float = PAD_HU) -> np.ndarray:
    """The phantom with its first three rows and a block of the last column as padding."""
    hu = phantom.copy()
    hu[:, :3] = value
    hu[:, 20:30, -1] = value
    return hu


def _set_padding(paths, **elements) -> None:
    """Write padding elements with the VR given, as some scanners do: {keyword: (vr, value)}."""
    for path in paths:
        ds = pydicom.dcmread(path)
        for keyword, (vr, value) in elements.items():
            ds.add_new(keyword, vr, value)
        ds.save_as(path)


def test_hu_masks_padding_as_nan_on_a_real_jpeg_2000_file():
    # pydicom's 693_J2KI.dcm: a GE CT with PixelPaddingValue -2000 on 494 pixels
    path = pydicom_file("693_J2KI.dcm")
    ds = pydicom.dcmread(path)
    stored = ds.pixel_array
    expected = np.where(stored == -2000, np.nan, apply_modality_lut(stored, ds))
    hu = dicomarray.open_series(path).dicom.hu()
    np.testing.assert_array_equal(hu.values[0], expected.astype(np.float32))
    assert np.isnan(hu.values).sum() == 494
    assert hu.attrs["dicomarray_padding"] == {"stored_values": [-2000, -2000], "action": "nan"}
    assert "PixelPaddingValue" not in hu.attrs


def test_hu_padding_nan_keep_or_a_fill_value(make_series, phantom):
    paths = make_series(hu=_padded(phantom), tags={"PixelPaddingValue": -2000})
    volume = dicomarray.open_series(paths[0].parent, chunks=5)
    mask = _padded(phantom) == PAD_HU
    reference = hu_of(paths)
    # the one-copy load, dask chunks, a selection of rows and a coronal cut all mask alike
    for hu in (volume.dicom.hu().values, volume.dicom.hu().compute().values):
        np.testing.assert_array_equal(np.isnan(hu), mask)
        np.testing.assert_array_equal(hu[~mask], reference[~mask])
    rows = volume.isel(y=slice(0, 10)).dicom.hu().values
    np.testing.assert_array_equal(np.isnan(rows), mask[:, :10])
    column = volume.isel(x=-1).dicom.hu().values
    np.testing.assert_array_equal(np.isnan(column), mask[:, :, -1])
    kept = volume.dicom.hu(padding="keep")
    np.testing.assert_array_equal(kept.values, reference)
    assert kept.attrs["dicomarray_padding"] == {"stored_values": [-2000, -2000], "action": "keep"}
    air = volume.dicom.hu(padding=-1000)
    np.testing.assert_array_equal(air.values, np.where(mask, -1000, reference))
    assert air.attrs["dicomarray_padding"]["fill_value"] == -1000.0
    # the graphs differ: computed together, each keeps its own values
    nan, keep = dask.compute(volume.dicom.hu().data, kept.data)
    assert np.isnan(nan).sum() == mask.sum() and not np.isnan(keep).any()


def test_padding_written_with_the_wrong_vr_reads_as_the_pixels_do(make_series, phantom):
    # signed pixels, PixelPaddingValue written as US 63536: the same bits as SS -2000
    paths = make_series(hu=_padded(phantom))
    _set_padding(paths, PixelPaddingValue=("US", 63536))
    volume = dicomarray.open_series(paths[0].parent)
    assert volume.attrs["PixelRepresentation"] == 1 and volume.attrs["PixelPaddingValue"] == 63536
    hu = volume.dicom.hu()
    np.testing.assert_array_equal(np.isnan(hu.values), _padded(phantom) == PAD_HU)
    assert hu.attrs["dicomarray_padding"]["stored_values"] == [-2000, -2000]


def test_a_padding_range_limit_masks_the_whole_range(make_series, phantom):
    hu = _padded(phantom)
    hu[:, 5, :4] = -2024 - 500  # stored -1500: the limit, padding
    hu[:, 6, :4] = -2024 - 499  # stored -1499: just outside, kept
    paths = make_series(hu=hu)
    # MONOCHROME2: the value below the limit; both as SS
    _set_padding(paths, PixelPaddingValue=("SS", -2000), PixelPaddingRangeLimit=("SS", -1500))
    out = dicomarray.open_series(paths[0].parent).dicom.hu()
    stored = hu + 1024
    np.testing.assert_array_equal(np.isnan(out.values), (stored >= -2000) & (stored <= -1500))
    assert out.attrs["dicomarray_padding"]["stored_values"] == [-2000, -1500]
    assert np.isnan(out.values[:, 5, :4]).all() and not np.isnan(out.values[:, 6, :4]).any()


def test_padding_declared_on_some_slices_masks_only_those(series):
    stored = series.values
    value = np.full(series.sizes["z"], np.nan)
    value[::2] = float(stored.min())  # the darkest stored value, on even slices only
    volume = series.assign_coords(pixel_padding_value=("z", value))
    hu = volume.dicom.hu()
    expected = (stored == stored.min()) & ~np.isnan(value)[:, None, None]
    np.testing.assert_array_equal(np.isnan(hu.values), expected)
    np.testing.assert_array_equal(
        np.isnan(volume.isel(y=slice(0, 20)).dicom.hu()), expected[:, :20]
    )
    assert "pixel_padding_value" not in hu.coords
    assert hu.attrs["dicomarray_padding"]["stored_values"][1] is None


def test_a_padding_value_outside_bits_stored_is_read_as_the_pixels_are_and_warned(series):
    unsigned12 = series.astype(np.uint16).assign_attrs(BitsStored=12, PixelPaddingValue=0xF830)
    with pytest.warns(dicomarray.errors.DicomArrayWarning, match="does not fit Bits Stored 12"):
        assert stored_padding(unsigned12) == (0x830, 0x830)
    assert stored_padding(series.assign_attrs(PixelPaddingValue=-2000)) == (-2000, -2000)
    assert stored_padding(series) is None


@pytest.mark.parametrize("value", [[-2000, -1000], "air", 1.5, float("inf"), 2.0**40])
def test_a_malformed_padding_tag_is_refused_unless_kept(series, value):
    bad = series.assign_attrs(PixelPaddingValue=value)
    with pytest.raises(TransformError, match="PixelPaddingValue .* not one integer"):
        bad.dicom.hu()
    kept = bad.dicom.hu(padding="keep")
    np.testing.assert_array_equal(kept.values, series.dicom.hu().values)
    assert kept.attrs["dicomarray_padding"] == {
        "action": "keep",
        "declared": {"PixelPaddingValue": value},
    }


@pytest.mark.parametrize("padding", ["zero", float("nan"), True, None])
def test_bad_padding_choices_are_refused(series, padding):
    with pytest.raises(TransformError, match="padding must be"):
        series.dicom.hu(padding=padding)


def test_windows_and_normalization_leave_padding_out(make_series, phantom):
    paths = make_series(hu=_padded(phantom), tags={"PixelPaddingValue": -2000})
    volume = dicomarray.open_series(paths[0].parent, chunks=4)
    mask = _padded(phantom) == PAD_HU
    hu = hu_of(paths)[~mask]
    assert np.isnan(volume.dicom.window().values[mask]).all()
    out = volume.dicom.normalize(method="zscore", min_bound=None, max_bound=None).values
    np.testing.assert_allclose(out[~mask], (hu - hu.mean()) / hu.std(), atol=1e-4)
    assert np.isnan(out[mask]).all()
    mr = volume.assign_attrs(Modality="MR", RescaleType="US").compute()
    ranged = mr.dicom.normalize()
    assert ranged.attrs["dicomarray_normalize"]["low"] == hu.min()
    low, high = np.percentile(hu, [1, 99])
    by_percentile = mr.dicom.normalize(method="percentile").attrs["dicomarray_normalize"]
    assert (by_percentile["low"], by_percentile["high"]) == pytest.approx((low, high))


@pytest.mark.parametrize("slope", [[1.0, 2.0], "steep", float("nan"), []])
def test_a_rescale_slope_that_is_not_one_finite_number_is_refused(series, slope):
    with pytest.raises(TransformError, match="RescaleSlope .* not one finite number"):
        series.assign_attrs(RescaleSlope=slope).dicom.hu()
    # a one-item list is that one value
    np.testing.assert_array_equal(
        series.assign_attrs(RescaleSlope=[1.0]).dicom.hu().values, series.dicom.hu().values
    )


def test_the_padding_mask_marks_the_padding_lazily(make_series, phantom, reads):
    paths = make_series(hu=_padded(phantom), tags={"PixelPaddingValue": -2000})
    volume = dicomarray.open_series(paths[0].parent)
    mask = volume.dicom.padding_mask()
    assert reads == [] and mask.dtype == bool and mask.name == "padding"
    np.testing.assert_array_equal(mask.values, _padded(phantom) == PAD_HU)
    np.testing.assert_array_equal(mask.values, np.isnan(volume.dicom.hu().values))
    # selections of the padded HU keep the mask: a few slices read from the files
    np.testing.assert_array_equal(
        np.isnan(volume.dicom.hu().isel(z=[1, 4]).values), mask.values[[1, 4]]
    )
    assert not dicomarray.open_series(make_series()[0].parent).dicom.padding_mask().values.any()
    with pytest.raises(TransformError, match="stored values"):
        volume.dicom.hu().dicom.padding_mask()
    with pytest.raises(TransformError, match="padding mask"):
        mask.dicom.hu()


def test_a_window_over_nothing_but_padding_says_so(series):
    everything = series.assign_attrs(Modality="MR", PixelPaddingValue=int(series.values.max()))
    nothing = everything.assign_attrs(PixelPaddingRangeLimit=int(series.values.min()))
    with pytest.raises(TransformError, match="padding"):
        without(nothing, "WindowCenter", "WindowWidth").compute().dicom.window()


# -- n-D volumes (issue 13): (t, z, y, x) ----------------------------------------------------


@pytest.fixture
def two_volumes(make_series, phantom):
    """Two volumes along t with different rescales: the files of each, and the 4-D volume."""
    first = make_series(slope=1.0, intercept=-1024.0, seed=1)
    second = make_series(hu=phantom + 100, slope=2.0, intercept=-1000.0, seed=2)
    volumes = [dicomarray.open_series(p[0].parent) for p in (first, second)]
    return volumes, stack_volumes(volumes, "t", [0.0, 4.5])


def test_hu_on_a_4d_volume_applies_each_frames_own_rescale(two_volumes):
    volumes, stacked = two_volumes
    assert stacked["rescale_slope"].dims == ("t", "z")
    expected = np.stack([hu_of(list(v["source_file"].values)) for v in volumes])
    hu = stacked.dicom.hu()
    assert hu.dims == ("t", "z", "y", "x")
    assert isinstance(hu.data, dask.array.Array)
    np.testing.assert_allclose(hu.values, expected, atol=1e-3)
    # a selection keeps the rescale of the frames it holds
    np.testing.assert_allclose(stacked.isel(t=1, z=2).dicom.hu().values, expected[1, 2], atol=1e-3)


@pytest.mark.parametrize("along", [("t", "z"), ("t",)])
def test_the_frame_reader_gets_one_rescale_per_frame_in_grid_order(two_volumes, monkeypatch, along):
    """The values handed to the FrameStack path are flat, one per frame, C order of (t, z):
    a rescale on ("t",) only (constant within each volume) is repeated over z."""
    import dicomarray.lazy

    _, stacked = two_volumes
    slopes = np.array([[1.0] * 12, [2.0] * 12])
    if along == ("t",):
        stacked = stacked.assign_coords(rescale_slope=("t", [1.0, 2.0]))
    seen = {}

    def spy(data, slope, intercept, padding=None):
        seen.update(slope=np.asarray(slope), intercept=np.asarray(intercept))

    monkeypatch.setattr(dicomarray.lazy, "rescaled_frames", spy)
    stacked.dicom.hu()
    np.testing.assert_array_equal(seen["slope"], slopes.reshape(-1))
    np.testing.assert_array_equal(seen["intercept"], np.repeat([-1024.0, -1000.0], 12))


def test_window_on_a_4d_volume_is_each_volumes_window(two_volumes):
    volumes, stacked = two_volumes
    out = stacked.dicom.window(preset="brain")
    assert out.dims == ("t", "z", "y", "x")
    for k, volume in enumerate(volumes):
        np.testing.assert_allclose(
            out.isel(t=k).values, volume.dicom.window(preset="brain").values, atol=1e-6
        )


def test_a_per_frame_window_coordinate_on_t_and_z_is_read(two_volumes):
    _, stacked = two_volumes
    centers = np.full((2, 12), 40.0)
    centers[1, 0] = 50.0  # the most common pair wins, whatever its shape
    widened = stacked.assign_coords(
        window_center=(("t", "z"), centers), window_width=(("t", "z"), np.full((2, 12), 80.0))
    )
    assert choose_window(widened).center == 40.0


def known_volumes(lazy: bool) -> xr.DataArray:
    """Two 2 x 2 x 2 volumes along t in HU: 0..70 and 0..140 (step 10 and 20)."""
    first = np.arange(8, dtype=np.float32).reshape(2, 2, 2) * 10
    data = np.stack([first, first * 2])
    array = xr.DataArray(
        data, dims=("t", "z", "y", "x"), attrs={"units": "HU", "dicomarray_values": "modality"}
    )
    # lazily, one chunk per slice: the statistics of each volume gather several chunks
    return array.chunk({"t": 1, "z": 1}) if lazy else array


@pytest.mark.parametrize("lazy", [False, True])
def test_normalize_global_scales_every_volume_alike(lazy):
    out = known_volumes(lazy).dicom.normalize(None, None)
    assert out.attrs["dicomarray_normalize"]["per"] == "global"
    np.testing.assert_allclose(out.values[0].max(), 0.5)
    np.testing.assert_allclose(out.values[1].max(), 1.0)
    np.testing.assert_allclose(out.values.ravel()[:8], np.arange(8) / 14, atol=1e-6)


@pytest.mark.parametrize("lazy", [False, True])
def test_normalize_per_volume_scales_each_volume_on_its_own(lazy):
    out = known_volumes(lazy).dicom.normalize(None, None, per="volume")
    assert out.dims == ("t", "z", "y", "x")
    for k in range(2):
        np.testing.assert_allclose(out.values[k].ravel(), np.arange(8) / 7, atol=1e-6)
    if not lazy:  # in memory, the record holds each volume's numbers
        record = out.attrs["dicomarray_normalize"]
        assert record["per"] == "volume"
        assert record["low"] == [0.0, 0.0] and record["high"] == [70.0, 140.0]


@pytest.mark.parametrize("lazy", [False, True])
def test_normalize_per_volume_percentiles_and_zscores(lazy):
    volumes = known_volumes(lazy)
    raw = volumes.values.reshape(2, -1).astype(np.float64)
    # a chunk per volume: dask's percentiles are exact within one chunk
    whole = volumes.chunk({"z": -1}) if lazy else volumes
    out = whole.dicom.normalize(method="percentile", percentiles=(10, 90), per="volume").values
    for k in range(2):
        low, high = np.percentile(raw[k], [10, 90])
        expected = np.clip((raw[k] - low) / (high - low), 0, 1)
        np.testing.assert_allclose(out[k].ravel(), expected, atol=1e-5)
    scores = volumes.dicom.normalize(None, None, method="zscore", per="volume").values
    for k in range(2):
        np.testing.assert_allclose(scores[k].ravel(), (raw[k] - raw[k].mean()) / raw[k].std())
    # globally, the second volume lies above the first
    overall = volumes.dicom.normalize(None, None, method="zscore").values
    np.testing.assert_allclose(overall.ravel(), (raw.ravel() - raw.mean()) / raw.std(), atol=1e-6)


def test_normalize_per_volume_of_a_3d_volume_is_the_global_one(series):
    for method in ("bounds", "percentile", "zscore"):
        one = series.dicom.normalize(None, None, method=method, per="volume").values
        every = series.dicom.normalize(None, None, method=method).values
        np.testing.assert_array_equal(one, every)


def test_normalize_refuses_an_unknown_per(series):
    with pytest.raises(TransformError, match="per='slice'.*global.*volume"):
        series.dicom.normalize(per="slice")


@pytest.mark.parametrize("per_slice", [False, True])
def test_hu_of_an_opened_4d_series_rescales_each_frame_as_it_is_read(tmp_path, reads, per_slice):
    """Slope per volume (a coord on t), intercept per slice too (on t and z) when asked:
    the frame reader gets each frame's own pair, in the grid's order."""
    from .test_split import grid_of, write_frames

    def tags(v, s):
        intercept = -10.0 * s if per_slice else -5.0
        return {
            "TemporalPositionIdentifier": v + 1,
            "RescaleSlope": 1.0 + v,
            "RescaleIntercept": intercept,
        }

    write_frames(tmp_path / "s", grid_of(3, 4, tags))
    volume = dicomarray.open_series(tmp_path / "s")
    assert volume.dims[:2] == ("t", "z")
    assert volume["rescale_slope"].dims == ("t",)
    hu = volume.dicom.hu()
    assert hu.data.name.startswith("dicom-rescaled-")  # rescaled as the frames are read
    values = hu.values
    assert sorted(reads) == sorted(list(range(12)))  # every frame read once, into one array
    v, s = np.meshgrid(range(3), range(4), indexing="ij")
    intercept = -10.0 * s if per_slice else -5.0
    np.testing.assert_array_equal(values[..., 0, 0], (100 * v + s) * (1.0 + v) + intercept)


def test_hu_of_an_opened_4d_series_masks_each_volumes_own_padding(tmp_path):
    """PixelPaddingValue differs per volume (a coord on t): in volume v it is the stored
    value of slice 1, 100 v + 1, so exactly those frames become NaN as they are read."""
    from .test_split import grid_of, write_frames

    def tags(v, s):
        return {"TemporalPositionIdentifier": v + 1, "PixelPaddingValue": 100 * v + 1}

    write_frames(tmp_path / "s", grid_of(3, 4, tags))
    volume = dicomarray.open_series(tmp_path / "s")
    assert volume["pixel_padding_value"].dims == ("t",)
    hu = volume.dicom.hu()
    assert hu.data.name.startswith("dicom-rescaled-")
    corner = hu.values[..., 0, 0]
    v, s = np.meshgrid(range(3), range(4), indexing="ij")
    np.testing.assert_array_equal(corner, np.where(s == 1, np.nan, 100 * v + s))
    assert hu.attrs["dicomarray_padding"]["stored_values"] == [[1, 1], [101, 101], [201, 201]]
