"""Pictures: physical aspect, orientation, layout, what is read, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import dicomarray
from dicomarray.errors import DicomArrayError, RenderError
from dicomarray.render import GAP, montage_indices, slice_picture

from .conftest import SMALL

N_SLICES = 12  # the conftest phantom: 12 slices 12 mm apart, 3.6 mm pixels
MARKER_HU = 3000


@pytest.fixture
def series(make_series):
    return dicomarray.open_series(make_series()[0].parent)


def picture_size(path) -> tuple[int, int]:
    """(height, width) of a written picture."""
    with Image.open(path) as image:
        return image.height, image.width


def png_values(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image, dtype=np.float32) / 255


# -- aspect and orientation -----------------------------------------------------------------


def test_coronal_and_sagittal_pictures_keep_the_physical_aspect(series, tmp_path):
    # 12 slices x 12 mm over 3.6 mm pixels: 40 rows of square pixels
    height = round(N_SLICES * 12.0 / 3.6)
    for axis in ("coronal", "sagittal"):
        path = series.dicom.to_jpg(tmp_path / f"{axis}.jpg", axis=axis)
        assert picture_size(path) == (height, SMALL)
    assert picture_size(series.dicom.to_jpg(tmp_path / "axial.jpg")) == (SMALL, SMALL)


def test_unequal_pixel_spacing_is_not_stretched(make_series, tmp_path):
    # rows 2 mm apart, columns 1 mm apart: twice as many picture rows as stored rows
    volume = dicomarray.open_series(make_series(pixel_spacing=(2.0, 1.0))[0].parent)
    assert picture_size(volume.dicom.to_jpg(tmp_path / "axial.png")) == (2 * SMALL, SMALL)


def test_an_axial_picture_is_the_stored_slice_windowed(series, tmp_path):
    path = series.dicom.to_jpg(tmp_path / "axial.png", 5, center=40, width=400)
    hu = series.dicom.hu().values[5]
    expected = np.clip((hu - 39.5) / 399 + 0.5, 0, 1)
    np.testing.assert_allclose(png_values(path), np.round(expected * 255) / 255, atol=1e-6)


def _with_marker_on_top(phantom: np.ndarray, superior_slice: int) -> np.ndarray:
    hu = phantom.copy()
    hu[superior_slice, 20:40, 20:40] = MARKER_HU
    return hu


@pytest.mark.parametrize(
    ("orientation", "superior_slice"),
    [
        ((1, 0, 0, 0, 1, 0), N_SLICES - 1),  # slices step toward the head
        ((1, 0, 0, 0, -1, 0), 0),  # the normal points to the feet: slices step downward
    ],
)
def test_superior_is_at_the_top(make_series, phantom, orientation, superior_slice):
    hu = _with_marker_on_top(phantom, superior_slice)
    volume = dicomarray.open_series(make_series(hu=hu, orientation=orientation)[0].parent)
    for axis in ("coronal", "sagittal"):
        picture = slice_picture(volume, 30, axis=axis, preset="bone")
        assert picture.shape == (40, SMALL)
        assert picture[0, 20:40].min() == 1.0, "the marker is not on the top row"
        assert picture[-1].max() < 0.5


def test_uneven_slices_are_placed_by_position(make_series, phantom):
    # slices filled with their own position in mm, one slice missing: a ramp of values
    positions = [12.0 * i for i in range(N_SLICES) if i != 6]
    hu = np.broadcast_to(np.float32(positions)[:, None, None], (len(positions), SMALL, SMALL))
    with pytest.warns(dicomarray.GeometryWarning):
        volume = dicomarray.open_series(
            make_series(hu=np.ascontiguousarray(hu).astype(np.int16), positions=positions)[0].parent
        )
    column = slice_picture(volume, axis="coronal", center=66, width=132, preset=None)[:, 10]
    assert len(column) == round((132 + 13.2) / 3.6)
    assert column[0] == pytest.approx(1.0, abs=0.01) and column[-1] == pytest.approx(0.0, abs=0.01)
    assert np.all(np.diff(column) <= 1e-6), "values do not fall steadily from top to bottom"
    assert column[len(column) // 2] == pytest.approx(0.5, abs=0.05)


def test_a_2d_slice_renders_as_its_own_plane(series):
    np.testing.assert_array_equal(
        slice_picture(series.isel(y=30)), slice_picture(series, 30, axis="coronal")
    )
    with pytest.raises(RenderError, match="coronal slice"):
        slice_picture(series.isel(y=30), axis="axial")


def test_other_modalities_use_the_range_of_the_values_shown(series):
    mr = series.assign_attrs(Modality="MR")
    for keyword in ("WindowCenter", "WindowWidth"):
        del mr.attrs[keyword]
    picture = slice_picture(mr, 6)
    assert picture.min() == 0.0 and picture.max() == 1.0


def test_monochrome1_is_shown_inverted(make_series, tmp_path):
    # MONOCHROME1: the minimum value is white (PS3.3 C.7.6.3.1.2)
    volumes = {
        pi: dicomarray.open_series(make_series(tags={"PhotometricInterpretation": pi})[0].parent)
        for pi in ("MONOCHROME2", "MONOCHROME1")
    }
    normal, inverted = volumes["MONOCHROME2"], volumes["MONOCHROME1"]
    for axis in ("axial", "coronal"):
        shown = slice_picture(normal, axis=axis, preset="bone")
        assert 0 < shown.mean() < 1
        np.testing.assert_allclose(
            slice_picture(inverted, axis=axis, preset="bone"), 1 - shown, atol=1e-6
        )
    written = [v.dicom.to_jpg(tmp_path / f"{n}.png") for n, v in enumerate(volumes.values())]
    np.testing.assert_allclose(png_values(written[1]), 1 - png_values(written[0]), atol=1 / 255)


# -- what is read ---------------------------------------------------------------------------


def test_rendering_one_axial_slice_reads_only_its_file(make_series, tmp_path, reads):
    volume = dicomarray.open_series(make_series()[0].parent)
    assert len(volume.chunks[0]) == 1  # one chunk holds every slice: laziness must be fine-grained
    volume.dicom.to_jpg(tmp_path / "one.jpg", 7)
    assert reads == [7]


def test_a_montage_reads_only_the_slices_shown(series, tmp_path, reads):
    series.dicom.montage(tmp_path / "montage.jpg", [1, 4, 9])
    assert sorted(reads) == [1, 4, 9]


def test_a_coronal_picture_reads_each_file_once(series, tmp_path, reads):
    series.dicom.to_jpg(tmp_path / "coronal.jpg", axis="coronal")
    assert sorted(reads) == list(range(N_SLICES))


# -- montage and orthogonal view ------------------------------------------------------------


def test_montage_grid(series, tmp_path):
    path = series.dicom.montage(tmp_path / "m.png", [0, 3, 6, 9, 11], columns=3)
    assert picture_size(path) == (2 * SMALL + GAP, 3 * SMALL + 2 * GAP)
    values = png_values(path)
    np.testing.assert_allclose(values[:SMALL, :SMALL], slice_picture(series, 0), atol=1 / 255)
    assert values[SMALL + GAP :, 2 * (SMALL + GAP) :].max() == 0.0  # the empty sixth cell
    default = series.dicom.montage(tmp_path / "all.png")  # 12 slices: 4 x 3
    assert picture_size(default) == (3 * SMALL + 2 * GAP, 4 * SMALL + 3 * GAP)


def test_montage_indices_are_even_and_few():
    assert montage_indices(12) == list(range(12))
    picked = montage_indices(300)
    assert len(picked) <= 16 and len(set(np.diff(picked))) == 1
    assert picked[0] + picked[-1] in (298, 299)  # centred


def test_orthogonal_view_puts_three_planes_side_by_side_at_one_scale(series, tmp_path):
    path = series.dicom.orthogonal(tmp_path / "ortho.png", z=6, y=30, x=32)
    assert picture_size(path) == (SMALL, 3 * SMALL + 2 * GAP)
    values = png_values(path)
    np.testing.assert_allclose(values[:, :SMALL], slice_picture(series, 6), atol=1 / 255)
    coronal = values[12:52, SMALL + GAP : 2 * SMALL + GAP]  # 40 rows, vertically centred
    np.testing.assert_allclose(coronal, slice_picture(series, 30, axis="coronal"), atol=1 / 255)


# -- files and errors -----------------------------------------------------------------------


def test_png_is_lossless_and_jpg_is_close(series, tmp_path):
    picture = slice_picture(series, 4)
    png = png_values(series.dicom.to_jpg(tmp_path / "slice.png", 4))
    np.testing.assert_array_equal(png, np.round(picture * 255) / 255)
    jpg = png_values(series.dicom.to_jpg(tmp_path / "slice.jpg", 4, quality=95))
    assert np.abs(jpg - picture).mean() < 0.02


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"index": N_SLICES}, "out of range"),
        ({"index": -N_SLICES - 1}, "out of range"),
        ({"index": 1.5}, "integer"),
        ({"index": 40, "axis": "coronal"}, None),  # fine: 64 rows
        ({"index": SMALL, "axis": "sagittal"}, "out of range"),
        ({"axis": "transverse"}, "unknown axis"),
        ({"preset": "brian"}, "unknown window preset"),
        ({"center": 40, "width": 0}, "width"),
        ({"quality": 0}, "quality"),
    ],
)
def test_bad_arguments_raise_clear_errors(series, tmp_path, kwargs, message):
    folder = tmp_path / "pictures"
    if message is None:
        series.dicom.to_jpg(folder / "out.jpg", **kwargs)
        return
    with pytest.raises(DicomArrayError, match=message):
        series.dicom.to_jpg(folder / "out.jpg", **kwargs)
    assert not folder.exists()


def test_unwritable_or_unsupported_paths_raise_before_reading(series, tmp_path, reads):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    (tmp_path / "folder.jpg").mkdir()
    for path in (blocker / "slice.jpg", tmp_path / "slice.gif", tmp_path / "folder.jpg"):
        with pytest.raises(RenderError):
            series.dicom.to_jpg(path)
    assert reads == []


def test_montage_and_orthogonal_need_a_volume(series, tmp_path):
    with pytest.raises(RenderError, match="dims"):
        series.isel(z=0).dicom.montage(tmp_path / "m.jpg")
    with pytest.raises(RenderError, match="out of range"):
        series.dicom.orthogonal(tmp_path / "o.jpg", x=SMALL)
    with pytest.raises(RenderError, match="at least one"):
        series.dicom.montage(tmp_path / "m.jpg", [])


# -- malformed tags: errors that name the series --------------------------------------------


def _label_of(volume) -> str:
    return f'series {volume.attrs["SeriesNumber"]} "{volume.attrs["SeriesDescription"]}"'


@pytest.mark.parametrize(
    ("keyword", "value"),
    [("ImageOrientationPatient", [1.0]), ("PixelSpacing", [0.5]), ("PixelSpacing", 0.5)],
)
def test_one_value_geometry_tags_raise_errors_naming_the_series(series, tmp_path, keyword, value):
    # one column: the column spacing can only come from the tag
    bad = series.isel(x=[3]).assign_attrs({keyword: value})
    for call in (
        lambda: bad.dicom.affine,
        lambda: bad.dicom.to_jpg(tmp_path / "a.jpg", axis="coronal"),
        lambda: bad.dicom.to_jpg(tmp_path / "b.jpg", axis="sagittal"),
    ):
        with pytest.raises(DicomArrayError, match=f"{keyword} .* must be") as caught:
            call()
        assert _label_of(series) in str(caught.value)
        assert str(series.attrs["dicomarray_assembly"]["files"][0].rsplit("/", 1)[0]) in str(
            caught.value
        )
    assert not list(tmp_path.glob("*.jpg"))


def test_a_multi_valued_voi_lut_function_raises_an_error_naming_the_series(make_series, tmp_path):
    folder = make_series(tags={"VOILUTFunction": ["LINEAR", "SIGMOID"]})[0].parent
    volume = dicomarray.open_series(folder)
    for call in (volume.dicom.window, lambda: volume.dicom.to_jpg(tmp_path / "a.jpg")):
        with pytest.raises(DicomArrayError, match="VOILUTFunction .* several values") as caught:
            call()
        assert _label_of(volume) in str(caught.value)
    # the way out the message names
    assert volume.dicom.window(function="SIGMOID").attrs["dicomarray_window"]["function"] == (
        "SIGMOID"
    )
    assert volume.dicom.to_jpg(tmp_path / "b.jpg", preset="brain").exists()


def test_any_other_failure_leaves_the_accessor_as_a_dicomarray_error(series, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise IndexError("list index out of range")

    monkeypatch.setattr(dicomarray.render, "write_slice", broken)
    with pytest.raises(DicomArrayError, match="^to_jpg failed: IndexError") as caught:
        series.dicom.to_jpg(tmp_path / "a.jpg")
    assert _label_of(series) in str(caught.value)
    assert isinstance(caught.value.__cause__, IndexError)


def test_padding_is_drawn_black_and_left_out_of_the_value_range(make_series, phantom, tmp_path):
    hu = phantom.copy()
    hu[:, :4] = -3024  # stored -2000: padding
    folder = make_series(hu=hu, tags={"PixelPaddingValue": -2000})[0].parent
    volume = dicomarray.open_series(folder).assign_attrs(Modality="MR", RescaleType="US")
    bare = volume.copy()
    bare.attrs = {k: v for k, v in volume.attrs.items() if not k.startswith("Window")}
    picture = png_values(bare.dicom.to_jpg(tmp_path / "a.png", 5))
    assert (picture[:4] == 0).all()
    # the range is that of the scanned field: its darkest pixel is black, its brightest white
    assert picture[4:].min() == 0.0 and picture[4:].max() == 1.0
    shown = phantom[5, 4:]
    np.testing.assert_allclose(
        picture[4:], np.round((shown - shown.min()) / np.ptp(shown) * 255) / 255, atol=1 / 255
    )
