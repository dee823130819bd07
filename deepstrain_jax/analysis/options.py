"""How :func:`deepstrain_jax.analysis.pipeline.analyze` reads and processes a cine: :class:`AnalysisOptions`."""

from __future__ import annotations

import dataclasses

import numpy as np

from deepstrain_jax.errors import check_type

SLICE_ORDERS = ("auto", "base_to_apex", "apex_to_base")
DISPLACEMENT_GRIDS = ("network", "native", "none")
CENTRES = ("auto", "vcn", "fov")
DEFAULT_CROP = 128  # in-plane size of the network crop of the shipped and the original networks


@dataclasses.dataclass(frozen=True)
class AnalysisOptions:
    """How :func:`analyze` reads and processes a cine.

    Attributes:
      ed: ED frame, 0-based (default: ``Info.cfg``, else frame 0).
      es: ES frame, 0-based (default: ``Info.cfg`` for an ACDC folder, else the frame of smallest LV volume).
      frame_interval_s: seconds between frames (default: the NIfTI header's, else from ``heart_rate_bpm``).
      heart_rate_bpm: beats per minute, when the header has no frame interval: ``dt = 60 / (HR T)`` (the cine
        covers one cycle).
      slice_order: ``"auto"`` (a phantom sidecar's record, else detected), ``"base_to_apex"`` or ``"apex_to_base"``.
      centre: ``"vcn"`` (the centring network on ED), ``"fov"`` (the field-of-view centre, as the original's
        ``test.py``) or ``"auto"`` (VCN, or the field of view in legacy mode).
      legacy: the original's choices where they differ: dipy-style corner-aligned resampling, field-of-view
        centring, and the original's strain numbers added to the results (``legacy_strain``).
      inplane_mm: in-plane voxel size of the network grid.
      displacement: the grid of ``displacement.nii.gz``: ``"network"`` (default: the 1.25 mm network grid the
        motion was estimated on, with its own affine; 80 MB for 30 frames), ``"native"`` (the input's grid:
        large, 0.45 GB for a 512 x 512 x 20 x 30 cine) or ``"none"`` (not written).
      itk_displacement: also write ``displacement_itk/frame_TTT.nii.gz``, one 3D displacement field per frame in
        the ITK convention (LPS components) that ITK, ANTs and Slicer load as a transform, on the grid of
        ``displacement`` (the network grid when that is ``"none"``).
      bullseye_limits_pct: ``((direction, lo, hi), ...)`` colour limits (%) of the strain bull's-eyes, replacing
        those of :data:`deepstrain_jax.report.plots.STRAIN_LIMITS_PCT` for the directions given.
      publication_figures: also write the strain bull's-eyes for print: ``polar_map.png`` at 300 dpi, plus
        ``polar_map.svg`` and ``polar_map.pdf`` (about 1 s a subject). Off: ``polar_map.png`` at 150 dpi only,
        the size the report shows.
    """

    ed: int | None = None
    es: int | None = None
    frame_interval_s: float | None = None
    heart_rate_bpm: float | None = None
    slice_order: str = "auto"
    centre: str = "auto"
    legacy: bool = False
    inplane_mm: float = 1.25
    displacement: str = "network"
    itk_displacement: bool = False
    bullseye_limits_pct: tuple = ()
    publication_figures: bool = False

    def __post_init__(self):
        for name in ("ed", "es"):
            check_type("AnalysisOptions", name, getattr(self, name), (int, np.integer, type(None)),
                       "a 0-based frame index (int) or None")
        for name in ("frame_interval_s", "heart_rate_bpm"):
            check_type("AnalysisOptions", name, getattr(self, name), (int, float, np.number, type(None)),
                       "a positive number or None")
        check_type("AnalysisOptions", "inplane_mm", self.inplane_mm, (int, float, np.number), "a positive number")
        check_type("AnalysisOptions", "legacy", self.legacy, (bool, np.bool_), "True or False")
        check_type("AnalysisOptions", "itk_displacement", self.itk_displacement, (bool, np.bool_), "True or False")
        check_type("AnalysisOptions", "publication_figures", self.publication_figures, (bool, np.bool_),
                   "True or False")
        for name, allowed in (("slice_order", SLICE_ORDERS), ("centre", CENTRES),
                              ("displacement", DISPLACEMENT_GRIDS)):
            check_type("AnalysisOptions", name, getattr(self, name), (str,), f"one of {allowed}")
        if self.slice_order not in SLICE_ORDERS:
            raise ValueError(f"slice_order must be one of {SLICE_ORDERS}, got {self.slice_order!r}")
        if self.centre not in CENTRES:
            raise ValueError(f"centre must be one of {CENTRES}, got {self.centre!r}")
        for item in self.bullseye_limits_pct:
            if (not isinstance(item, (tuple, list)) or len(item) != 3
                    or item[0] not in ("radial", "circumferential", "longitudinal")
                    or not all(isinstance(v, (int, float)) and np.isfinite(v) for v in item[1:]) or item[1] >= item[2]):
                raise ValueError(f"bullseye_limits_pct entries must be (direction, lo, hi) with lo < hi, got {item!r}")
        if self.displacement not in DISPLACEMENT_GRIDS:
            raise ValueError(f"displacement must be one of {DISPLACEMENT_GRIDS}, got {self.displacement!r}")
        for name in ("frame_interval_s", "heart_rate_bpm", "inplane_mm"):
            v = getattr(self, name)
            if v is not None and not (np.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive number, got {v}")
        for name in ("ed", "es"):
            v = getattr(self, name)
            if v is not None and int(v) < 0:
                raise ValueError(f"{name} must be a 0-based frame index >= 0, got {v}")

    @property
    def use_vcn(self) -> bool:
        return self.centre == "vcn" or (self.centre == "auto" and not self.legacy)
