"""pedsam.stream.core.warp_field: the fitted map from current frame to keyframe is the motion
that moved the points, bends included, and wrong points do not bend it."""

from __future__ import annotations

import numpy as np

from pedsam.stream.core.warp_field import WarpField, fit_field


def grid_points(x0: float, y0: float, x1: float, y1: float, n: int = 12) -> np.ndarray:
    xs, ys = np.meshgrid(np.linspace(x0, x1, n), np.linspace(y0, y1, n))
    return np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32)


def test_an_affine_motion_is_recovered_despite_a_third_of_wrong_points() -> None:
    rng = np.random.default_rng(0)
    current = grid_points(100, 80, 220, 180)
    true = np.array([[0.95, -0.2, 30.0], [0.18, 1.05, -12.0]])  # turn, scale, shift
    key = current @ true[:, :2].T + true[:, 2]
    wrong = rng.random(len(current)) < 0.33
    key[wrong] += rng.uniform(-40, 40, size=(int(wrong.sum()), 2))
    fit = fit_field(current, key.astype(np.float32), ransac_px=1.0, keep_px=1.0)
    assert fit.field is not None
    np.testing.assert_allclose(fit.field.affine, true, atol=1e-3)
    assert not (fit.kept & wrong).any() and fit.kept[~wrong].all()


def bend(points: np.ndarray, amount: float) -> np.ndarray:
    """Each point shifted sideways by ``amount`` times its squared distance (in units of 60 px)
    from the row y = 130: a banana-shaped, non-affine deformation, plus a shift."""
    out = points.copy()
    out[:, 0] += amount * ((points[:, 1] - 130.0) / 60.0) ** 2 + 5.0
    return out


def test_the_mesh_follows_a_bend_that_one_affine_motion_cannot() -> None:
    current = grid_points(140, 70, 180, 190, n=10)  # a tall object
    key = bend(current, 14.0)
    inside = grid_points(140, 70, 180, 190, n=40)  # every pixel-ish of it, not just the points
    meshed = fit_field(current, key, grid=6, keep_px=1.0, smooth=0.1, max_residual=40.0)
    plain = fit_field(current, key, grid=0, ransac_px=1.0, keep_px=1.0)
    assert meshed.field is not None and plain.field is not None
    mesh_error = np.linalg.norm(meshed.field.points(inside) - bend(inside, 14.0), axis=1)
    plain_error = np.linalg.norm(plain.field.points(inside) - bend(inside, 14.0), axis=1)
    assert mesh_error.max() < 1.0 and plain_error.max() > 5.0, (mesh_error.max(), plain_error.max())


def test_a_second_motion_inside_the_object_is_not_taken_for_a_deformation() -> None:
    current = grid_points(100, 100, 200, 200, n=12)
    key = current.copy()  # the object stands still...
    riders = current[:, 0] > 170  # ...while something slides over its right part, 20 px per frame
    key[riders, 0] += 20.0
    expected = np.zeros_like(current)  # last frame, every point's residual was zero
    gated = fit_field(current, key, grid=6, keep_px=1.0, max_residual=60.0, expected=expected, max_change=6.0)
    loose = fit_field(current, key, grid=6, keep_px=1.0, max_residual=60.0)
    assert gated.field is not None and loose.field is not None
    probe = grid_points(175, 100, 200, 200, n=5)
    assert np.abs(gated.field.points(probe) - probe).max() < 0.5  # the right part stays put
    assert np.abs(loose.field.points(probe) - probe).max() > 5.0  # without the gate it is dragged along
    assert not gated.kept[riders].any()


def test_warping_a_mask_through_a_shift_moves_it_by_that_shift() -> None:
    key = np.zeros((20, 30), np.uint8)
    key[5:15, 8:20] = 255
    field = WarpField(np.array([[1.0, 0.0, -7.0], [0.0, 1.0, 3.0]]))  # current (x, y) was key (x - 7, y + 3)
    out = field.warp(key, (100, 50), (100, 40, 140, 70)) > 127  # key crop placed at x=100, y=50
    rows, cols = np.nonzero(out)
    # key pixels x 108..119, y 55..64 -> current x 115..126, y 52..61, i.e. box-relative below.
    assert (cols.min(), cols.max(), rows.min(), rows.max()) == (15, 26, 12, 21)
    assert field.inverse_box((108, 55, 120, 65), margin=0.0) == (115.0, 52.0, 127.0, 62.0)
