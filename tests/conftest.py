"""Shared test setup: the package lives in workflow/, the repo root is two levels up."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "workflow") not in sys.path:
    sys.path.insert(0, str(ROOT / "workflow"))


def pytest_configure(config):
    # child processes (the CLI, snakemake jobs) must import the same package
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in [str(ROOT / "workflow"), os.environ.get("PYTHONPATH", "")] if p
    )


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(1234)


def have_snakemake() -> bool:
    return shutil.which("snakemake") is not None


def pytest_collection_modifyitems(config, items):
    # the gpu_ext build test first: later tests (the loader's stale-build check in
    # test_gaussian_ops.py) use the module it builds instead of skipping
    items.sort(key=lambda item: 0 if item.fspath.basename == "test_gpu_ext_build.py" else 1)


@pytest.fixture
def drawn_lines(monkeypatch):
    """{legend label: (RGB colour, marker)} of the lines in the first axes of each figure that
    volbench.paper.figures draws while the fixture is active (save_figure replaced: nothing written)."""
    import matplotlib.colors
    import matplotlib.pyplot as plt

    from volbench.paper import figures

    drawn = {}

    def keep(fig, base, formats=("png", "pdf")):
        for line in fig.axes[0].get_lines():
            drawn[line.get_label()] = (tuple(matplotlib.colors.to_rgb(line.get_color())), line.get_marker())
        plt.close(fig)
        return []

    monkeypatch.setattr(figures, "save_figure", keep)
    return drawn
