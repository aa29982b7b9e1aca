"""Fine-tuning zoo models on your own classes (``streamclf train``).

Modules, one job each: :mod:`~streamclf.train.data` and :mod:`~streamclf.train.formats`
(dataset layouts and split files), :mod:`~streamclf.train.augment` (clip transforms),
:mod:`~streamclf.train.dataset` (clip decoding for the loader), :mod:`~streamclf.train.model`
(backbone + new head), :mod:`~streamclf.train.recipe` (settings, learning-rate schedule),
:mod:`~streamclf.train.loop` (one epoch), :mod:`~streamclf.train.fit` (a whole run),
:mod:`~streamclf.train.checkpoint` (files in ``--out``), :mod:`~streamclf.cli.train`
(the CLI). Importing this package loads no torch or OpenCV.
"""
