"""Reading and writing imaging data: NIfTI volumes and cines (:mod:`.nifti`), ACDC patient folders (:mod:`.acdc`).

Conventions shared by the loaders:

* volumes are numpy arrays with the array axes of the file: ``(X, Y, Z)`` or ``(X, Y, Z, T)``; axes 0 and 1 are
  in-plane, axis 2 is the slice axis of a short-axis stack, axis 3 is time;
* the 4x4 ``affine`` maps continuous voxel indices to world millimetres (NIfTI RAS+), as in
  :mod:`deepstrain_jax.ops.grid`; ``spacing_mm`` is the voxel size per array axis from the header zooms;
* labels follow ACDC: 0 background, 1 RV cavity, 2 LV myocardium, 3 LV cavity;
* frame indices are 0-based everywhere in the library; ACDC's 1-based ``Info.cfg`` values and file names are
  converted at the edge (:mod:`.acdc`);
* bad files raise :class:`deepstrain_jax.errors.InputError` naming the file and the problem.

Submodules are imported explicitly (``from deepstrain_jax.data import nifti``) so that importing the package
stays cheap.
"""
