"""A test-only sparse-slice method for tests/test_sparse_workflow.py (named in a config by
`module: sparse_flaky_method`, with tests/ on PYTHONPATH): the held-out slices as the mean of the
training slices, except that it raises while the file `fail_while` exists (a failure that goes
away) and sleeps `sleep` seconds first (a job that can be killed mid-run)."""

from __future__ import annotations

import os
import time

import numpy as np

from volbench.sparse.methods import SparseMethod


class Flaky(SparseMethod):
    name = "flaky"
    display_name = "Flaky mean"
    defaults = {"fail_while": "", "sleep": 0.0}

    def reconstruct(self, train, ctx):
        time.sleep(float(self.params["sleep"]))
        if self.params["fail_while"] and os.path.exists(self.params["fail_while"]):
            raise RuntimeError(f"failing while {self.params['fail_while']} exists (simulated)")
        mean = train.slices.astype(np.float64).mean(axis=0)
        return np.repeat(mean[None], len(train.test_z), axis=0)
