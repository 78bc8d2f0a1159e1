"""scripts/in-env runs its own clone's volbench (issue 22, item 6): the virtual environment is shared
by every clone and holds an editable install of whichever clone ran setup last, so the clone's
workflow/ must come first on the import path."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys


def test_in_env_imports_its_own_clone(tmp_path, repo_root):
    clone = tmp_path / "other-clone"
    (clone / "scripts").mkdir(parents=True)
    shutil.copy(repo_root / "scripts" / "in-env", clone / "scripts" / "in-env")
    pkg = clone / "workflow" / "volbench"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "cli.py").write_text("import volbench\nprint('volbench from', volbench.__file__)\n")
    # another clone's package is importable too (as the shared venv's editable install makes it)
    env = {**os.environ, "VOLBENCH_VENV": sys.prefix, "PYTHONPATH": str(repo_root / "workflow")}
    for cmd in (["python", "-m", "volbench.cli"], ["python", "-c", "import volbench.cli"]):
        r = subprocess.run(["bash", str(clone / "scripts" / "in-env"), *cmd], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert f"volbench from {pkg / '__init__.py'}" in r.stdout, r.stdout
