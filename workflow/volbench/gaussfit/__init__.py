"""Shared training code of the Gaussian codecs (volmicro, gaussianpile, gs3d_slice).

Modules: common (device, seeds, presets, intensity scaling, geometry), gset (parameters + Adam
with densification surgery), losses, gate (TOPS-Gate), volfit (VolMicro training), slicefit
(slice-supervised training), focus3d (the focus rendering as a 3D Gaussian), morton,
fileformat (payload formats), progress (tqdm + history.csv), codec_base (shared Codec logic).
"""
