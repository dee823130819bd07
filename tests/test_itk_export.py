"""``--itk-displacement``: the per-frame ITK/LPS displacement fields, loaded by SimpleITK (the independent
reference) as a DisplacementFieldTransform, warp a frame exactly as the project's own warp does; the ITK-SNAP
label description file."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from test_analyze import SMALL

from deepstrain_jax.analysis.networks import Networks
from deepstrain_jax.ops.warp import warp
from deepstrain_jax.phantom import dataset
from deepstrain_jax.pipeline import analyze

sitk = pytest.importorskip("SimpleITK")


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    # An oblique stack: the LPS/RAS conversion of both the grid and the vectors is exercised.
    root = tmp_path_factory.mktemp("itk")
    folder = dataset.save_case(root / "patient001", dataset.make_case(12, "NOR", oblique=True, **SMALL))
    result = analyze(folder, root / "out", networks=Networks.load(), displacement="native", itk_displacement=True)
    return folder, root / "out", result


def test_simpleitk_warp_with_the_exported_field_equals_the_project_warp(analysed, tmp_path):
    folder, out, result = analysed
    es = result.results["frames"]["es"]
    cine = nib.load(folder / "patient001_4d.nii.gz")
    frame = np.asarray(cine.dataobj)[..., es].astype(np.float32)
    nib.save(nib.Nifti1Image(frame, cine.affine), str(tmp_path / "frame.nii.gz"))

    field = sitk.ReadImage(str(out / "displacement_itk" / f"frame_{es:03d}.nii.gz"))
    assert field.GetNumberOfComponentsPerPixel() == 3 and field.GetSize() == frame.shape
    moving = sitk.ReadImage(str(tmp_path / "frame.nii.gz"), sitk.sitkFloat32)
    transform = sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))
    itk = np.transpose(sitk.GetArrayFromImage(sitk.Resample(moving, moving, transform, sitk.sitkLinear, -1.0)))

    # The project's warp with the same (native-grid, world mm) displacement, in voxels of the file's axes.
    u_world = result.displacement_mm[..., es, :]
    u_vox = u_world @ np.linalg.inv(result.affine[:3, :3]).T
    ours = np.asarray(warp(frame[None, ..., None], u_vox[None].astype(np.float32)))[0, ..., 0]

    # Compare where the displaced point is inside the image (ITK gives its default value outside, the project
    # clamps to the edge), over the heart's moving region and the rest alike.
    target = np.indices(frame.shape).transpose(1, 2, 3, 0) + u_vox
    inside = np.all((target >= 0) & (target <= np.asarray(frame.shape) - 1), axis=-1)
    assert inside.mean() > 0.9 and np.abs(u_world[inside]).max() > 1.0  # real motion, mostly inside
    np.testing.assert_allclose(itk[inside], ours[inside], atol=1e-3 * float(np.abs(frame).max()))
    # A field read with the wrong vector convention (RAS components) would move the image elsewhere.
    flipped = sitk.GetImageFromArray(np.transpose(sitk.GetArrayFromImage(field) * np.array([-1, -1, 1.0]),
                                                  (0, 1, 2, 3)), isVector=True)
    flipped.CopyInformation(field)
    wrong = np.transpose(sitk.GetArrayFromImage(sitk.Resample(
        moving, moving, sitk.DisplacementFieldTransform(sitk.Cast(flipped, sitk.sitkVectorFloat64)),
        sitk.sitkLinear, -1.0)))
    both = inside & (wrong >= 0)
    assert np.abs(wrong[both] - ours[both]).max() > 10 * np.abs(itk[both] - ours[both]).max()


def test_label_descriptions_and_outputs_list(analysed):
    _, out, result = analysed
    lines = [line for line in (out / "segmentation_labels.txt").read_text().splitlines() if not line.startswith("#")]
    labels = {int(line.split()[0]): line.split('"')[1] for line in lines}
    assert labels == {0: "Background", 1: "RV cavity", 2: "LV myocardium", 3: "LV cavity"}
    assert result.results["options"]["itk_displacement"] is True
    n = result.results["frames"]["n"]
    assert sorted(p.name for p in (out / "displacement_itk").iterdir()) == [f"frame_{t:03d}.nii.gz" for t in range(n)]
