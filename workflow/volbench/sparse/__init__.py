"""Sparse-slice reconstruction (seed 004, Table 1): given only some of the axial slices of a
volume, how well does a method reconstruct the slices it never saw?

Modules, in the order a run uses them (docs/sparse-slices.md):

* ``split``: the seeded training / test choice of axial slices per dataset and fraction, and the
  training file (``input/train.tif`` + ``train.json``), the only thing a method's job reads;
* ``methods``: the registry of reconstruction methods (``SparseMethod``) and the baselines:
  ``interp`` (nearest-slice copy, linear and cubic interpolation along z), ``siren_fit``
  (SIREN on the training slices' voxels), ``gaussian_fit`` (slice-adapted 3DGS and GaussianPile
  trained on the training slices only);
* ``run``: one method on one split in a contained child process (a failure is recorded, not
  raised), with its record (``fit.json``: split, parameters, versions, time);
* ``score``: PSNR / SSIM / LPIPS on every held-out slice, mean and std over them;
* ``table`` and ``figure``: seed 004 Table 1's layout (published values beside ours) and the
  held-out slices beside each method;
* ``plan``: the ``sparse_slices:`` config section, its checks, the cells and the targets;
* ``cli``: the ``volbench sparse-*`` subcommands the rules in workflow/rules/sparse.smk call.
"""
