"""Training code of the Gaussian codecs (volmicro, gaussianpile, gs3d_slice).

Modules: common (the operators, intensity scaling, geometry), gset (parameters + Adam with
densification surgery), losses, gate (TOPS-Gate), volfit (VolMicro training), slicefit
(slice-supervised training), focus3d (the focus rendering as a 3D Gaussian), morton,
fileformat (payload formats), progress (tqdm + history.csv).

This package imports nothing from volbench.codecs: the Codec classes, decoding and region-of-
interest reading are in volbench/codecs/_gaussian.py (and volmicro.py, gaussianpile.py,
gs3d_slice.py); the operators are volbench.gaussian_ops.
"""
