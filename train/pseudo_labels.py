"""Automatic labels for the frames of real cines that have no manual labels (CarMEN's anatomical loss, issue 12).

The paper trains CarMEN on real ACDC cines with an anatomical term that needs labels of both frames of every
pair, ED -> t for every t. ACDC labels only ED and ES, so the other frames are labelled by CarSON (with VCN
centring) exactly as ``deepstrain analyze`` segments a cine
(:func:`deepstrain_jax.analysis.pipeline.segment_stack`). Manual labels, where a frame has them, are kept.

The labeller is given to :class:`deepstrain_jax.training_data.pools.RealAcdcPool`; its ``key`` (the SHA-256 of the
CarSON and VCN variables) enters the pool's cache key, so labels made by other models are never reused.
"""

from __future__ import annotations

import numpy as np

from deepstrain_jax.analysis.networks import Networks, load_network, variables_sha256
from deepstrain_jax.analysis.pipeline import segment_stack


class CarsonLabeller:
    """``labeller(case) -> {frame: (X, Y, Z) uint8}`` for every frame of ``case`` without manual labels.

    Args:
      carson, vcn: model specs as :meth:`Networks.load` takes them (``None``: the shipped models).

    Picklable (the networks are loaded lazily, once per process).
    """

    def __init__(self, carson=None, vcn=None):
        self.carson, self.vcn = carson, vcn
        self._networks = None
        nets = self._load()
        self.key = "carson:{} vcn:{}".format(variables_sha256(nets.carson.variables),
                                            variables_sha256(nets.vcn.variables))

    def _load(self) -> Networks:
        if self._networks is None:
            # The shipped CarMEN only sets the network grid (crop, slices) that segment_stack works on.
            self._networks = Networks(carson=load_network("carson", self.carson), carmen=load_network("carmen"),
                                      vcn=load_network("vcn", self.vcn))
        return self._networks

    def __getstate__(self):
        return {"carson": self.carson, "vcn": self.vcn, "key": self.key, "_networks": None}

    def __call__(self, case) -> dict:
        missing = [t for t in range(case.image.shape[3]) if t not in case.labels]
        if not missing:
            return {}
        # The whole cine, centred on ED, as the analysis does; only the frames without manual labels are used.
        seg = segment_stack(case.image, case.spacing_mm, networks=self._load(), ed=case.ed)
        return {t: np.ascontiguousarray(seg.native[..., t]) for t in missing}
