"""Training inputs: subjects on the network grid (:mod:`.subjects`), cached pools of them (:mod:`.pools`: phantoms,
ACDC-layout folders, real ACDC in its three forms, mixtures), seeded batch samplers (:mod:`.batches`) and their
augmentation (:mod:`.augment`).

This package sits above :mod:`deepstrain_jax.phantom` (it renders phantoms) and :mod:`deepstrain_jax.data`
(reading and pre-processing images); inference never imports it.
"""
