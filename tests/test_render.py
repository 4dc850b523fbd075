"""Pictures: physical aspect, orientation, tilted stacks in patient space, montage order,
annotation, layout, what is read, and clear errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

import dicomarray
from dicomarray.cli import main
from dicomarray.errors import DicomArrayError, DicomArrayWarning, RenderError
from dicomarray.geometry import VolumeGeometry
from dicomarray.render import (
    BAND_ROWS,
    GAP,
    _annotated,
    direction_letters,
    edge_labels,
    montage_indices,
    slice_picture,
)
from dicomarray.sample import write_series
from dicomarray.transforms import linear_window

from .conftest import SMALL
from .nd_volumes import rgb_volume, stack_volumes

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
        # 20 marker pixels wide (where across depends on the view: anterior on the left)
        assert (picture[0] == 1.0).sum() == 20, "the marker is not on the top row"
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


# -- tilted stacks: pictures in patient space ----------------------------------------------

TILT = 20.0  # degrees
ROD_HU = 1000
ROD_COLUMN = 30  # the rod's middle column: it runs along S at one patient L
ROD_WINDOW = {"center": 500, "width": 1000}  # the rod white, soft tissue black


def _rod_rows(n_slices: int, first_row: float, slice_spacing: float) -> np.ndarray:
    """Row of the rod in each slice of a tilted stack written by dicomarray.sample: slices
    step along the normal rotated by the tilt toward anterior, so a line at one patient
    (L, P) sits sin(tilt) x slice step further down each next slice."""
    return first_row + np.arange(n_slices) * slice_spacing * math.sin(math.radians(TILT))


@pytest.fixture
def tilted(tmp_path):
    """16 slices 2 mm apart, 1 mm pixels, tilted 20 degrees, with a bright rod along the
    patient's S axis (3 x 3 pixels where it crosses each slice) in soft tissue."""
    n, size = 16, 64
    hu = np.full((n, size, size), -1000, np.int16)
    hu[:, 4:60, 4:60] = 0
    rows = _rod_rows(n, 20.0, 2.0)
    for k, row in enumerate(np.round(rows).astype(int)):
        hu[k, row - 1 : row + 2, ROD_COLUMN - 1 : ROD_COLUMN + 2] = ROD_HU
    paths = write_series(
        tmp_path / "tilted", hu, pixel_spacing=(1.0, 1.0), slice_spacing=2.0, tilt_degrees=TILT
    )
    # the stack is sheared as _rod_rows assumes: each slice 2 sin(20 deg) mm further anterior
    p = [float(pydicom.dcmread(path).ImagePositionPatient[1]) for path in paths]
    np.testing.assert_allclose(np.diff(p), -2.0 * math.sin(math.radians(TILT)), atol=1e-4)
    with pytest.warns(dicomarray.GeometryWarning, match="tilt"):
        volume = dicomarray.open_series(paths[0].parent)
    return volume, rows


def _rod_columns(picture: np.ndarray) -> np.ndarray:
    """Middle column of the bright pixels in each picture row that has some."""
    columns = [np.flatnonzero(row > 0.9).mean() for row in picture if (row > 0.9).any()]
    return np.asarray(columns)


def test_a_sagittal_picture_of_a_tilted_series_shows_a_vertical_rod_vertical(tilted):
    volume, rows = tilted
    assert rows[-1] - rows[0] > 10  # in index space the rod slants by more than 10 rows
    picture = slice_picture(volume, ROD_COLUMN, axis="sagittal", **ROD_WINDOW)
    columns = _rod_columns(picture)
    assert len(columns) >= 0.9 * picture.shape[0]  # the rod runs the whole height
    assert np.ptp(columns) <= 1.0
    # the height is that of the slice planes: 15 steps of 2 cos(20 deg) mm, 1 mm pixels
    assert picture.shape[0] == round(16 * 2.0 * math.cos(math.radians(TILT)))


def test_a_coronal_picture_of_a_tilted_series_is_the_plane_through_the_voxel(tilted, reads):
    volume, rows = tilted
    middle = volume.sizes["z"] // 2
    row = round(rows[middle])  # the rod's row in the middle slice
    picture = slice_picture(volume, row, axis="coronal", **ROD_WINDOW)
    # the plane follows the rod through every slice; row `row` of each slice would hold it
    # in three slices only
    assert len(_rod_columns(picture)) >= 0.9 * picture.shape[0]
    assert np.ptp(_rod_columns(picture)) <= 1.0
    # each file read once, only a band of rows around those the plane crosses in it
    assert sorted(reads) == list(range(volume.sizes["z"]))
    assert all(stop - start <= BAND_ROWS for start, stop in reads.rows)
    crossed = row + rows - rows[middle]  # the plane's row in each slice
    for k, (start, stop) in zip(reads, reads.rows, strict=True):
        assert start <= math.floor(crossed[k]) and math.ceil(crossed[k]) < stop
    assert len(set(reads.rows)) > 1  # the band moves with the plane


def test_a_tilted_series_is_sampled_at_true_positions_between_rows(tmp_path):
    # values 10 HU per mm of the patient's P coordinate: in a sagittal plane (columns
    # along P) each picture column holds one value; in index space each would change by
    # 10 x 0.68 HU a slice, since each slice sits 0.68 mm (not a whole row) further anterior
    n, size = 16, 64
    first_p = -np.arange(n) * 2.0 * math.sin(math.radians(TILT))  # slice 0 at the origin
    hu = np.round(10 * (first_p[:, None, None] + np.arange(size)[None, :, None]))
    paths = write_series(
        tmp_path / "s",
        np.broadcast_to(hu, (n, size, size)).astype(np.int16),
        pixel_spacing=(1.0, 1.0),
        slice_spacing=2.0,
        origin=(0.0, 0.0, 0.0),
        tilt_degrees=TILT,
    )
    written = [float(pydicom.dcmread(path).ImagePositionPatient[1]) for path in paths]
    np.testing.assert_allclose(written, first_p, atol=1e-4)
    with pytest.warns(dicomarray.GeometryWarning, match="tilt"):
        volume = dicomarray.open_series(tmp_path / "s")
    picture = slice_picture(volume, axis="sagittal", center=0, width=1200)
    hu_shown = (picture - 0.5) * 1199 - 0.5  # the LINEAR window (PS3.3 C.11.2.1.2) undone
    columns = [c[np.isfinite(c)] for c in hu_shown.T if np.isfinite(c).sum() > 5]
    assert len(columns) > size / 2
    assert max(np.ptp(c) for c in columns) <= 1.5  # the stored values' rounding only
    assert np.nanmax(hu_shown) - np.nanmin(hu_shown) > 500  # a real ramp across the picture


def test_one_row_of_a_tilted_series_is_refused_as_a_plane(tilted):
    volume, rows = tilted
    with pytest.raises(RenderError, match="tilted by 20.0 degrees .* axis='coronal'"):
        slice_picture(volume.isel(y=20))


def test_pictures_do_not_depend_on_how_the_volume_is_stored(tilted):
    volume, _ = tilted
    flipped = volume.dicom.reorient("RAS")  # y and x reversed
    assert flipped.dicom.orientation_code() == "RAS"
    transposed = volume.transpose("x", "z", "y")
    for axis, dim in (("axial", "z"), ("coronal", "y"), ("sagittal", "x")):
        expected = slice_picture(volume, 5, axis=axis, **ROD_WINDOW)
        mirrored = volume.sizes[dim] - 1 - 5 if dim != "z" else 5
        np.testing.assert_array_equal(
            slice_picture(flipped, mirrored, axis=axis, **ROD_WINDOW), expected
        )
        np.testing.assert_array_equal(
            slice_picture(transposed, 5, axis=axis, **ROD_WINDOW), expected
        )


# -- montage order --------------------------------------------------------------------------


def _tile_means(path, rows: int, columns: int, size: int = SMALL) -> list[float]:
    values = png_values(path)
    return [
        float(
            values[r * (size + GAP) : r * (size + GAP) + size, c * (size + GAP) :][:, :size].mean()
        )
        for r in range(rows)
        for c in range(columns)
    ]


def _ramp_toward_the_feet() -> np.ndarray:
    """12 slices, slice ``k`` being ``k`` steps toward the feet: 50 HU more each slice
    toward the head (550 HU in slice 0, 0 in the last)."""
    values = 50 * np.arange(N_SLICES - 1, -1, -1, dtype=np.int16)
    return np.broadcast_to(values[:, None, None], (N_SLICES, SMALL, SMALL)).astype(np.int16)


def test_a_feet_first_montage_runs_inferior_to_superior(make_series, tmp_path):
    # (-1, 0, 0, 0, 1, 0): the normal points to the feet and the slices step along it
    folder = make_series(hu=_ramp_toward_the_feet(), orientation=(-1, 0, 0, 0, 1, 0))[0].parent
    volume = dicomarray.open_series(folder)
    assert not volume.dicom.geometry.superior_is_ascending("z")  # stored superior first
    window = {"center": 275, "width": 700}
    path = volume.dicom.montage(tmp_path / "m.png", [0, 4, 8, 11], columns=4, **window)
    means = _tile_means(path, 1, 4)
    assert np.all(np.diff(means) > 0), means


def test_a_flipped_volume_gives_the_same_montage(series, tmp_path):
    flipped = series.isel(z=slice(None, None, -1))
    assert not flipped.dicom.geometry.superior_is_ascending("z")
    shown = series.dicom.montage(tmp_path / "a.png", [1, 5, 9])
    # the same slices, named by their indices in the flipped volume, in another order
    same = flipped.dicom.montage(tmp_path / "b.png", [N_SLICES - 1 - i for i in (5, 9, 1)])
    np.testing.assert_array_equal(png_values(same), png_values(shown))
    by_order = series.sortby(-series["z"]).dicom.montage(tmp_path / "c.png")
    np.testing.assert_array_equal(
        png_values(by_order), png_values(series.dicom.montage(tmp_path / "d.png"))
    )


# -- annotation -----------------------------------------------------------------------------


def _geometry(orientation, positions=None) -> VolumeGeometry:
    return VolumeGeometry(
        dims=("z", "y", "x"),
        shape=(2, 4, 4),
        orientation=np.asarray(orientation, dtype=float),
        slice_positions=np.asarray(positions or [[0, 0, 0], [0, 0, 5]], dtype=float),
        row_step=1.0,
        column_step=1.0,
        positions_known=True,
        fallback_step=None,
    )


@pytest.mark.parametrize(
    ("orientation", "plane", "expected"),
    [
        ((1, 0, 0, 0, 1, 0), "axial", "A P R L"),  # radiological: the patient's left on the right
        ((1, 0, 0, 0, 1, 0), "coronal", "S I R L"),
        ((1, 0, 0, 0, 1, 0), "sagittal", "S I A P"),
        # feet-first, rows stored toward the patient's right: still shown radiologically
        ((-1, 0, 0, 0, 1, 0), "axial", "A P R L"),
        ((-1, 0, 0, 0, 1, 0), "coronal", "S I R L"),
        ((1, 0, 0, 0, 0, -1), "axial", "S I R L"),  # a coronal acquisition's slices
        ((0, 1, 0, 0, 0, -1), "axial", "S I A P"),  # a sagittal acquisition's slices
        ((0, 1, 0, 0, 0, -1), "coronal", "A P R L"),  # ... whose y cut is an axial plane
    ],
)
def test_edge_labels_name_the_patient_directions(orientation, plane, expected):
    labels = edge_labels(_geometry(orientation), plane)
    assert " ".join(labels[edge] for edge in ("top", "bottom", "left", "right")) == expected


def test_an_oblique_direction_gets_two_letters_main_one_first():
    tilt = math.radians(20)
    assert direction_letters([0, -math.sin(tilt), math.cos(tilt)]) == "SA"
    assert direction_letters([0, math.sin(math.radians(10)), -1]) == "I"  # under 15 degrees
    # a series acquired tilted by 20 degrees (Philips): the rows of its axial picture lean
    cosines = (1, 0, 0, 0, math.cos(tilt), -math.sin(tilt))
    assert edge_labels(_geometry(cosines), "axial")["bottom"] == "PI"


def test_annotation_is_drawn_in_the_margins_only(make_series):
    # one grey value: every pixel a label draws (white, or its black outline) changes
    flat = dicomarray.open_series(make_series(hu=np.full((N_SLICES, SMALL, SMALL), 40))[0].parent)
    plain = slice_picture(flat, 6, preset="brain")
    labelled = [slice_picture(flat, k, preset="brain", annotate=True) for k in (6, 7)]
    changed = labelled[0] != plain
    margin = 12  # one line of the 8-pixel default font and its outline
    assert not changed[margin:-margin, margin:-margin].any()
    middle = slice(SMALL // 2 - 6, SMALL // 2 + 6)
    for strip in (
        changed[:margin, middle],
        changed[-margin:, middle],
        changed[middle, :margin],
        changed[middle, -margin:],
    ):
        assert strip.any()  # a letter at the middle of each edge
    # the slice position, bottom left, changes with the slice; the letters do not
    differs = labelled[0] != labelled[1]
    assert differs[-margin:, : SMALL // 2].any()
    assert not differs[:-margin].any() and not differs[:, SMALL // 2 :].any()


def test_montage_and_orthogonal_label_every_panel(series, tmp_path):
    for name, write in (
        ("m", lambda **k: series.dicom.montage(tmp_path / f"m{len(k)}.png", [2, 8], **k)),
        ("o", lambda **k: series.dicom.orthogonal(tmp_path / f"o{len(k)}.png", **k)),
    ):
        plain, labelled = png_values(write()), png_values(write(annotate=True))
        changed = plain != labelled
        # the top middle of each panel carries a letter
        for left in range(0, changed.shape[1], SMALL + GAP):
            assert changed[:, left + SMALL // 2 - 6 : left + SMALL // 2 + 6].any(), name


def test_the_render_command_annotates_unless_told_not_to(series, tmp_path):
    folder = str(series.attrs["dicomarray_assembly"]["files"][0].rsplit("/", 1)[0])
    for flag, annotate in (([], True), (["--no-annotate"], False)):
        out = tmp_path / f"{annotate}.png"
        assert main(["render", "-i", folder, "-o", str(out), *flag]) == 0
        expected = slice_picture(series, annotate=annotate)
        np.testing.assert_allclose(png_values(out), np.round(expected * 255) / 255, atol=1e-6)


@pytest.mark.parametrize(
    ("orientation", "dim", "expected"),
    [
        ((1, 0, 0, 0, 1, 0), "z", "S 5.0 mm"),  # slice 1 of slices at S 0 and 5
        ((-1, 0, 0, 0, 1, 0), "z", "S 5.0 mm"),  # feet-first: the same S coordinate
        ((1, 0, 0, 0, 1, 0), "y", "P 2.0 mm"),  # row 2 of a slice through P 0
        ((1, 0, 0, 0, -1, 0), "y", "P -2.0 mm"),  # rows toward anterior: row 2 is at P -2
        ((1, 0, 0, 0, 1, 0), "x", "L 3.0 mm"),
    ],
)
def test_the_position_label_is_the_patient_coordinate_of_the_plane(orientation, dim, expected):
    from dicomarray.render import _Cut, _position_text

    assert _position_text(_geometry(orientation), _Cut(dim, (1, 2, 3))) == expected


def test_in_slice_indices_invert_world_in_each_slice_of_a_tilted_stack(tilted):
    geometry = tilted[0].dicom.geometry
    rng = np.random.default_rng(0)
    yx = rng.uniform(0, 63, size=(geometry.n_slices, 5, 2))
    k = np.broadcast_to(np.arange(geometry.n_slices)[:, None, None], (geometry.n_slices, 5, 1))
    points = geometry.world(np.concatenate([k, yx], axis=-1))
    np.testing.assert_allclose(geometry.in_slice_indices(points), yx, atol=1e-9)
    # a point off its slice's plane is projected along the normal onto it
    lifted = points + 7.0 * geometry.normal
    np.testing.assert_allclose(geometry.in_slice_indices(lifted), yx, atol=1e-9)
    assert geometry.superior_normal @ [0, 0, 1] > 0.9


# -- n-D volumes (issue 13): a volume chosen by select, a montage over time -----------------


@pytest.fixture
def two_times(make_series, phantom):
    """Two volumes along t (the second 300 HU brighter) and the 4-D volume."""
    volumes = [
        dicomarray.open_series(make_series(hu=phantom + shift, seed=n)[0].parent)
        for n, shift in enumerate((0, 300))
    ]
    return volumes, stack_volumes(volumes, "t", [0.0, 4.5])


def test_select_pictures_the_chosen_volume(two_times, tmp_path):
    volumes, stacked = two_times
    for k in (0, 1, -1):
        shown = slice_picture(stacked, 5, select={"t": k}, preset="bone")
        np.testing.assert_array_equal(shown, slice_picture(volumes[k], 5, preset="bone"))
    assert not np.array_equal(
        slice_picture(volumes[0], 5, preset="bone"), slice_picture(volumes[1], 5, preset="bone")
    )
    coronal = slice_picture(stacked, 30, axis="coronal", select={"t": 1})
    np.testing.assert_array_equal(coronal, slice_picture(volumes[1], 30, axis="coronal"))
    path = stacked.dicom.orthogonal(tmp_path / "o.png", z=6, select={"t": 1})
    expected = volumes[1].dicom.orthogonal(tmp_path / "expected.png", z=6)
    np.testing.assert_array_equal(png_values(path), png_values(expected))


def test_an_unselected_extra_dim_shows_its_first_volume_and_says_so(two_times, tmp_path):
    volumes, stacked = two_times
    with pytest.warns(DicomArrayWarning, match=r"dims t \(2\) .*t=0.*select=\{'t'"):
        path = stacked.dicom.to_jpg(tmp_path / "first.png", 5)
    np.testing.assert_allclose(
        png_values(path), png_values(volumes[0].dicom.to_jpg(tmp_path / "expected.png", 5))
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"select": {"echo": 0}}, r"select names \['echo'\].*extra dims: t \(2\)"),
        ({"select": {"t": 2}}, "t index 2 is out of range: the volume has 2 t positions"),
        ({"select": {"t": 0.5}}, "t index must be an integer"),
    ],
)
def test_bad_selections_raise_errors_naming_the_dims(two_times, tmp_path, kwargs, message):
    _, stacked = two_times
    with pytest.raises(RenderError, match=message):
        stacked.dicom.to_jpg(tmp_path / "bad.png", **kwargs)


def test_a_montage_over_time_shows_one_slice_of_each_volume(two_times, tmp_path, reads):
    volumes, _ = two_times
    # one chunk a slice: dask cannot cut a slice out of a chunk through a concatenation
    # (an assembled 4-D series reads frame by frame whatever its chunks)
    sliced = [
        dicomarray.open_series(Path(v["source_file"].values[0]).parent, chunks=1) for v in volumes
    ]
    stacked = stack_volumes(sliced, "t", [0.0, 4.5])
    path = stacked.dicom.montage(tmp_path / "time.png", over="t", z=5, columns=2, preset="bone")
    assert sorted(reads) == [5, 5]  # slice 5 of each volume, nothing else
    values = png_values(path)
    assert values.shape == (SMALL, 2 * SMALL + GAP)
    for k, volume in enumerate(volumes):
        tile = values[:, k * (SMALL + GAP) : k * (SMALL + GAP) + SMALL]
        np.testing.assert_allclose(tile, slice_picture(volume, 5, preset="bone"), atol=1 / 255)
    # annotated, each tile names its time: the labels differ, the pictures below do not
    labelled = png_values(stacked.dicom.montage(tmp_path / "l.png", over="t", annotate=True))
    assert labelled.shape == values.shape


def test_a_montage_over_z_of_a_4d_volume_is_that_of_the_selected_volume(two_times, tmp_path):
    volumes, stacked = two_times
    path = stacked.dicom.montage(tmp_path / "m.png", [1, 4], select={"t": 1})
    expected = volumes[1].dicom.montage(tmp_path / "e.png", [1, 4])
    np.testing.assert_array_equal(png_values(path), png_values(expected))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"over": "echo"}, "not 'echo'; its extra dims: t"),
        ({"z": 3}, "z= picks the slice of a montage over an extra dim"),
        ({"over": "t", "select": {"t": 0}}, "do not select it too"),
        ({"over": "t", "z": 12}, "out of range"),
    ],
)
def test_bad_montages_over_time_raise_clear_errors(two_times, tmp_path, kwargs, message):
    _, stacked = two_times
    with pytest.raises(RenderError, match=message):
        stacked.dicom.montage(tmp_path / "bad.png", **kwargs)


# -- colour (issue 13): a trailing "channel" dim is drawn in RGB -----------------------------


def test_a_colour_slice_is_the_stored_rgb_scaled_by_its_bits(tmp_path):
    rgb = rgb_volume()
    picture = slice_picture(rgb, 2)
    assert picture.shape == (6, 8, 3)
    np.testing.assert_allclose(picture, rgb.values[2] / 255, atol=1e-6)
    assert picture[0, -1, 0] == 1.0 and picture[-1, 0, 1] == 1.0  # red right, green down
    png = rgb.dicom.to_jpg(tmp_path / "c.png", 2)
    with Image.open(png) as image:
        assert image.mode == "RGB"
    np.testing.assert_array_equal(png_values(png) * 255, rgb.values[2])
    jpg = png_values(rgb.dicom.to_jpg(tmp_path / "c.jpg", 2))
    assert jpg.shape == (6, 8, 3)
    # a 2-D colour slice is its own plane; 16-bit samples scale by their Bits Stored
    np.testing.assert_array_equal(slice_picture(rgb.isel(z=2)), picture)
    wide = rgb.astype(np.uint16) * 16  # 12 bits stored: 255 * 16 of 4095
    np.testing.assert_allclose(
        slice_picture(wide.assign_attrs(BitsStored=12), 2), rgb.values[2] * 16.0 / 4095, atol=1e-6
    )


def test_a_colour_coronal_picture_has_superior_at_the_top():
    rgb = rgb_volume()
    coronal = slice_picture(rgb, 3, axis="coronal")
    assert coronal.shape == (4, 8, 3)
    np.testing.assert_allclose(coronal, rgb.values[::-1, 3] / 255, atol=1e-6)
    assert coronal[0, 0, 2] == 1.0  # blue rises with z: brightest at the top


def test_a_window_given_for_colour_applies_to_each_channel():
    rgb = rgb_volume()
    windowed = slice_picture(rgb, 1, center=128, width=64)
    np.testing.assert_allclose(windowed, linear_window(rgb.values[1], 128, 64), atol=1e-6)


def test_colour_montages_orthogonal_views_and_labels(tmp_path):
    rgb = rgb_volume((4, 8, 8))
    montage = png_values(rgb.dicom.montage(tmp_path / "m.png", [0, 3], columns=2))
    assert montage.shape == (8, 2 * 8 + GAP, 3)
    np.testing.assert_array_equal(montage[:, :8] * 255, rgb.values[0])
    np.testing.assert_array_equal(montage[:, 8 + GAP :] * 255, rgb.values[3])
    ortho = png_values(rgb.dicom.orthogonal(tmp_path / "o.png"))
    assert ortho.shape[2] == 3
    big = rgb_volume((4, 96, 96))
    labelled = slice_picture(big, 1, annotate=True)
    plain = slice_picture(big, 1)
    assert (np.abs(labelled - plain).max(axis=-1) > 0).any()
    # each channel carries the letters as a grey picture of it would
    labels, position = edge_labels(big.dicom.geometry, "axial"), "S 1.0 mm"
    for c in range(3):
        np.testing.assert_array_equal(labelled[..., c], _annotated(plain[..., c], labels, position))


def test_a_montage_over_time_of_an_opened_4d_series_reads_one_frame_a_tile(tmp_path, reads):
    from .test_split import grid_of, write_frames

    write_frames(tmp_path / "s", grid_of(3, 4, lambda v, s: {"TemporalPositionIdentifier": v + 1}))
    volume = dicomarray.open_series(tmp_path / "s")
    assert volume.dims == ("t", "z", "y", "x")
    path = volume.dicom.montage(tmp_path / "t.png", over="t", z=2, columns=3, center=150, width=300)
    assert sorted(reads) == [2, 6, 10]  # frame (t, z=2) of each volume: flat index 4 t + 2
    tiles = png_values(path)[:, :: 6 + GAP][0]  # the first pixel of each 6 x 6 tile
    np.testing.assert_allclose(
        tiles, linear_window(np.array([2.0, 102.0, 202.0]), 150, 300), atol=1 / 255
    )
    reads.clear()
    volume.dicom.to_jpg(tmp_path / "one.png", 1, select={"t": 2})
    assert reads == [9]


def test_the_readme_n_d_and_colour_example_runs(tmp_path, monkeypatch):
    import re

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("### n-D and colour volumes in values and pictures", 1)[1]
    (block,) = re.findall(r"```python\n(.*?)```", section.split("\n### ", 1)[0], flags=re.S)
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {})
    assert picture_size(tmp_path / "time.png")[1] > 2 * SMALL
