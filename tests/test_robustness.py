"""Robustness of a long benchmark: a failing codec is contained, a killed run resumes, runs are
deterministic, large volumes are scored in blocks, and inputs cannot escape their folders.

The workflow tests run the real Snakefile on two tiny synthetic volumes with zstd, zfp and
`broken`, an instance of tests/failing_codec.py whose encoder raises MemoryError on dataset
`da` and whose decoder dies of SIGABRT (os.abort) on dataset `db`. One full run is shared
(the reference); a second full run checks determinism; a third is killed with SIGKILL in the
middle and resumed with the same command.
"""

from __future__ import annotations

import base64
import io as _io
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO / "workflow"))

from volbench import io as vio  # noqa: E402
from volbench import metrics  # noqa: E402
from volbench.config import check_config  # noqa: E402
from volbench.errors import VolbenchError  # noqa: E402

#: summary columns that measure time or memory of this run: everything else must repeat
NONDETERMINISTIC = ["encode_seconds", "decode_seconds", "decode_mvox_s", "encode_peak_mb", "decode_peak_mb"]

CONFIG = """\
seed: 0
device: cpu
metrics:
  lpips: {enabled: false}
datasets:
  da:
    synthetic: {generator: neuron, shape: [8, 24, 20], seed: 3}
  db:
    synthetic: {generator: cells, shape: [9, 20, 22], seed: 4}
codecs:
  zstd:
    rate_points:
      - {level: 3}
  zfp:
    params: {mode: rate}
    rate_points:
      - {rate: 4}
  broken:
    codec: failing
    module: failing_codec
    params: {encode_fail_on: da, decode_abort_on: db}
    rate_points:
      - {label: only}
"""
TARGET = "results/tables/summary.csv"


def snakemake_cmd(workdir: Path, config: Path, *extra: str, cores: int = 2) -> list[str]:
    exe = Path(sys.executable).with_name("snakemake")
    return [str(exe) if exe.exists() else "snakemake", "--snakefile", str(REPO / "Snakefile"),
            "--directory", str(workdir), "--configfile", str(config), "--cores", str(cores), *extra, TARGET]


def snakemake_env() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    # the test codec module; the rules put workflow/ in front of it
    env["PYTHONPATH"] = str(TESTS) + (f":{env['PYTHONPATH']}" if env.get("PYTHONPATH") else "")
    return env


def run_snakemake(workdir: Path, config: Path, *extra: str, timeout: float = 400) -> subprocess.CompletedProcess:
    proc = subprocess.run(snakemake_cmd(workdir, config, *extra), env=snakemake_env(), capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"snakemake failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    return proc


def read_summary(workdir: Path):
    import pandas as pd

    return pd.read_csv(workdir / TARGET)


def deterministic(df):
    return df.drop(columns=[c for c in NONDETERMINISTIC if c in df.columns]).reset_index(drop=True)


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("config") / "robust.yaml"
    p.write_text(CONFIG)
    return p


@pytest.fixture(scope="module")
def reference(tmp_path_factory, config_file) -> Path:
    """One complete run, with --keep-going."""
    wd = tmp_path_factory.mktemp("reference")
    run_snakemake(wd, config_file, "--keep-going")
    return wd


# -- failure containment ---------------------------------------------------------------------
def test_failing_codec_is_contained_and_reported(reference):
    df = read_summary(reference)
    cells = {(r.dataset, r.codec): r for r in df.itertuples()}
    assert len(df) == 6 and len(cells) == 6, "a cell was dropped from the summary"
    for ds in ("da", "db"):
        for codec in ("zstd", "zfp"):
            r = cells[(ds, codec)]
            assert r.status == "ok", (ds, codec, r.error)
            assert r.bytes > 0 and np.isfinite(r.bpv)
    enc_fail = cells[("da", "broken")]
    assert enc_fail.status == "failed"
    assert "encode failed" in enc_fail.error and "MemoryError" in enc_fail.error, enc_fail.error
    dec_fail = cells[("db", "broken")]
    assert dec_fail.status == "failed"
    assert "decode failed" in dec_fail.error and "SIGABRT" in dec_fail.error, dec_fail.error
    # the reason comes from the job's log, which holds the codec's own traceback
    log = (reference / "logs/encode/da/broken/only.log").read_text()
    assert "MemoryError" in log
    # the Markdown table lists the failed cells with their reasons
    md = (reference / "results/tables/summary.md").read_text()
    assert "da / broken / only" in md and "db / broken / only" in md and "SIGABRT" in md
    # no compressed file is left behind by the failed encode
    assert not (reference / "results/encoded/da/broken/only/volume.vbc").exists()
    # failed cells still say how the tables and figures show their codec (Codec.describe)
    assert enc_fail.display_name == dec_fail.display_name == "failing" and enc_fail.family == "other"
    assert cells[("da", "zstd")].display_name == "Zstandard (lossless)"


# -- failed and deleted cells are redone by a plain rerun -------------------------------------------
REDO_CONFIG = """\
seed: 0
device: cpu
metrics:
  lpips: {enabled: false}
datasets:
  da:
    synthetic: {generator: neuron, shape: [8, 24, 20], seed: 3}
codecs:
  zstd:
    rate_points:
      - {level: 3}
  zfp:
    params: {mode: rate}
    rate_points:
      - {target_bpp: 200}
  flaky:
    codec: failing
    module: failing_codec
    params: {fail_while: FLAG}
    rate_points:
      - {label: only}
"""


def _jobs(proc) -> dict[str, int]:
    """{rule: jobs} of a run (Snakemake's job stats table); {} when nothing was to be done."""
    out = proc.stdout + proc.stderr
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(encode|decode|score|summary)\s+(\d+)\s*$", out, re.M)}


def test_failed_and_deleted_cells_are_redone_by_a_plain_rerun(tmp_path):
    """Issue 22, item 4: a failed cell (status failed in encode.json / decode.json) and a cell whose
    encoded or decoded folder was deleted are redone by rerunning the same command, and only they;
    the advice in the summary and in a damaged file's message is that command."""
    import pandas as pd

    flag = tmp_path / "flag"
    flag.write_text("fail")
    cfg = tmp_path / "redo.yaml"
    cfg.write_text(REDO_CONFIG.replace("FLAG", str(flag)))
    wd = tmp_path / "w"
    res = wd / "results"

    def status():
        df = pd.read_csv(wd / TARGET)
        return {r.codec: (r.status, r.error) for r in df.itertuples() if r.codec != "zfp"}

    first = run_snakemake(wd, cfg)
    assert status()["flaky"][0] == "failed" and "simulated" in status()["flaky"][1]
    md = (res / "tables/summary.md").read_text()
    assert "run the same snakemake command again" in md
    # item 5: a target_bpp beyond the knob's range ran (status ok), is marked, and said so once
    zfp = pd.read_csv(wd / TARGET).set_index("codec").loc["zfp"]
    assert zfp["status"] == "ok" and bool(zfp["target_missed"]) and zfp["knob_value"] == 32
    assert "Missed targets" in md and "da / zfp / target_bpp-200: target 200 bpv" in md
    warnings = [ln for ln in first.stderr.splitlines() if ln.startswith("volbench: warning:")]
    assert len(warnings) == 1 and "da/zfp/target_bpp-200" in warnings[0], first.stderr[-3000:]
    zstd_vbc = res / "encoded/da/zstd/level-3/volume.vbc"
    stamp = zstd_vbc.stat().st_mtime_ns

    flag.unlink()  # the cause goes away: the same command redoes the failed cell, and only it
    assert _jobs(run_snakemake(wd, cfg)) == {"encode": 1, "decode": 1, "score": 1, "summary": 1}
    assert {c: st for c, (st, _) in status().items()} == {"zstd": "ok", "flaky": "ok"}
    assert zstd_vbc.stat().st_mtime_ns == stamp
    assert _jobs(run_snakemake(wd, cfg)) == {}  # whole again: nothing more is redone

    shutil.rmtree(res / "encoded/da/zstd/level-3")  # a deleted encoded folder: the whole cell
    assert _jobs(run_snakemake(wd, cfg)) == {"encode": 1, "decode": 1, "score": 1, "summary": 1}
    assert zstd_vbc.exists()
    shutil.rmtree(res / "decoded/da/flaky/only")  # a deleted decoded folder: its decode and score
    assert _jobs(run_snakemake(wd, cfg)) == {"decode": 1, "score": 1, "summary": 1}
    assert (res / "decoded/da/flaky/only/volume.tif").exists()
    assert _jobs(run_snakemake(wd, cfg)) == {}

    # a damaged compressed file: its decode fails, says what to do, and doing it repairs the cell
    data = bytearray(zstd_vbc.read_bytes())
    data[-3] ^= 0xFF
    zstd_vbc.write_bytes(bytes(data))
    shutil.rmtree(res / "decoded/da/zstd/level-3")
    run_snakemake(wd, cfg)
    st, err = status()["zstd"]
    assert st == "failed" and "checksum mismatch" in err and "run the same snakemake command again" in err, err
    assert _jobs(run_snakemake(wd, cfg)) == {"encode": 1, "decode": 1, "score": 1, "summary": 1}
    assert status()["zstd"][0] == "ok"
    assert _jobs(run_snakemake(wd, cfg)) == {}


def test_cell_redo_param(tmp_path):
    """The `redo` param (volbench.cellstate): changes exactly while a step of the cell is broken, and
    equals what Snakemake stored once the cell is whole again (no rerun loop)."""
    from volbench import cellstate

    assert repr(cellstate.redo_param(None, "")) == "volbench-redo-0"  # never redone: not stored at all
    assert cellstate.redo_param(None, "its encode failed") == "volbench-redo-1"
    stored = ["'cpu'", repr("volbench-redo-1")]  # what Snakemake stores: the params' reprs
    assert cellstate.redo_param(stored, "") == "volbench-redo-1"
    assert cellstate.redo_param(stored, "its decode failed") == "volbench-redo-2"

    root = tmp_path / "results"
    enc, dec, met = cellstate.cell_dirs(root, "d", "c", "p")

    def state():
        return {step: cellstate.broken(root, "d", "c", "p", step) for step in ("encode", "decode", "score")}

    assert state() == {"encode": "", "decode": "", "score": ""}  # a fresh cell: nothing to redo
    for folder, rec in ((enc, "encode.json"), (dec, "decode.json")):
        folder.mkdir(parents=True)
        vio.write_json(folder / rec, {"status": "ok"})
    (enc / "volume.vbc").write_bytes(b"x")
    (dec / "volume.tif").write_bytes(b"x")
    met.mkdir(parents=True)
    vio.write_json(met / "metrics.json", {"status": "ok"})
    assert state() == {"encode": "", "decode": "", "score": ""}  # whole
    vio.write_json(dec / "decode.json", {"status": "failed", "corrupt": True})
    assert state()["encode"] == "its compressed file is damaged" and state()["decode"] == "its decode failed"
    vio.write_json(dec / "decode.json", {"status": "failed"})  # a crash of the decoder: decode only
    assert state()["encode"] == "" and state()["decode"] == "its decode failed"
    vio.write_json(dec / "decode.json", {"status": "ok"})
    (enc / "volume.vbc").unlink()
    assert "volume.vbc is missing" in state()["encode"]
    shutil.rmtree(enc)
    assert state()["decode"].endswith("is missing") and state()["score"].endswith("is missing")
    shutil.rmtree(dec)
    assert state()["decode"] == "" and state()["score"].endswith("is missing")


# -- resume after SIGKILL ----------------------------------------------------------------------
def _incomplete(workdir: Path) -> set[str]:
    """Outputs Snakemake has marked incomplete (running when it was killed)."""
    out = set()
    for f in (workdir / ".snakemake/incomplete").glob("*"):
        try:
            out.add(base64.urlsafe_b64decode(f.name.encode()).decode())
        except (ValueError, UnicodeDecodeError):
            pass
    return out


def _finished(workdir: Path) -> dict[str, int]:
    """mtime (ns) of every file inside the finished outputs of prepare/encode/decode/score."""
    skip = _incomplete(workdir)
    res = workdir / "results"
    outs = [p for p in (res / "data").glob("*/volume.tif")] + [p for p in (res / "data").glob("*/meta.json")]
    outs += [p for p in (res / "encoded").glob("*/*/*") if p.is_dir()]
    outs += [p for p in (res / "decoded").glob("*/*/*") if p.is_dir()]
    outs += list((res / "metrics").glob("*/*/*/metrics.json"))
    # failed cells are redone by every rerun (item 4 of issue 22): not finished work
    failed = set()
    for rec in list(res.glob("encoded/*/*/*/encode.json")) + list(res.glob("decoded/*/*/*/decode.json")):
        try:
            if vio.read_json(rec).get("status") != "ok":
                failed.add("/".join(rec.parent.parts[-3:]))
        except ValueError:
            pass
    stamps = {}
    for p in outs:
        rel = str(p.relative_to(workdir))
        if rel in skip or any(rel.startswith(s.rstrip("/") + "/") for s in skip):
            continue
        if any(f"/{cell}/" in f"/{rel}/" for cell in failed):
            continue
        for f in ([p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())):
            stamps[str(f.relative_to(workdir))] = f.stat().st_mtime_ns
    return stamps


def _status(path: Path) -> str | None:
    try:
        return vio.read_json(path).get("status")
    except (OSError, ValueError):
        return None


@pytest.fixture(scope="module")
def resumed(tmp_path_factory, config_file) -> dict:
    """A run killed with SIGKILL once two cells are scored ok, then rerun with the same command."""
    wd = tmp_path_factory.mktemp("resumed")
    cmd = snakemake_cmd(wd, config_file, cores=1)
    proc = subprocess.Popen(cmd, env=snakemake_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    metrics_dir = wd / "results/metrics"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            # two cells scored ok (failed cells are redone by the rerun, so they do not count)
            if sum(_status(m) == "ok" for m in metrics_dir.glob("*/*/*/metrics.json")) >= 2:
                break
            if proc.poll() is not None:
                pytest.fail(f"snakemake ended before it could be killed: {proc.stderr.read()[-3000:]}")
            time.sleep(0.2)
        else:
            pytest.fail("no metrics after 300 s")
        os.killpg(proc.pid, signal.SIGKILL)  # snakemake and the job it runs, mid-DAG
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    killed = {"done_before": (wd / TARGET).exists(), "locks": any((wd / ".snakemake/locks").glob("*")),
              "before": _finished(wd)}
    time.sleep(0.05)  # a rewrite would show in mtime_ns
    rerun = subprocess.run(cmd, env=snakemake_env(), capture_output=True, text=True, timeout=400)
    return {**killed, "dir": wd, "rerun": rerun, "after": _finished(wd)}


def test_resume_after_sigkill(reference, resumed):
    import pandas as pd

    assert not resumed["done_before"], "the run finished before it was killed"
    assert resumed["locks"], "the killed run should have left its locks"
    before, after = resumed["before"], resumed["after"]
    assert any(k.endswith("metrics.json") for k in before), before
    rerun = resumed["rerun"]
    assert rerun.returncode == 0, f"the rerun failed:\n{rerun.stdout[-2000:]}\n{rerun.stderr[-4000:]}"
    redone = sorted(k for k, t in before.items() if after.get(k) != t)
    assert not redone, f"finished jobs were recomputed: {redone}"
    pd.testing.assert_frame_equal(deterministic(read_summary(reference)), deterministic(read_summary(resumed["dir"])),
                                  check_exact=True)


# -- determinism -----------------------------------------------------------------------------
def test_two_runs_are_identical(reference, resumed):
    """The second run (the killed and resumed one, separate processes) repeats the first."""
    import pandas as pd

    assert resumed["rerun"].returncode == 0
    tmp_path = resumed["dir"]
    vbc_a = sorted(p.relative_to(reference) for p in (reference / "results/encoded").rglob("*.vbc"))
    vbc_b = sorted(p.relative_to(tmp_path) for p in (tmp_path / "results/encoded").rglob("*.vbc"))
    assert vbc_a == vbc_b and len(vbc_a) == 5  # zstd, zfp on both, broken on db
    for rel in vbc_a:
        assert (reference / rel).read_bytes() == (tmp_path / rel).read_bytes(), f"{rel} differs between runs"
    for rel in (p.relative_to(reference) for p in (reference / "results/decoded").rglob("volume.tif")):
        a, b = vio.read_volume(reference / rel), vio.read_volume(tmp_path / rel)
        assert np.array_equal(a, b), rel
    pd.testing.assert_frame_equal(deterministic(read_summary(reference)), deterministic(read_summary(tmp_path)),
                                  check_exact=True)


# -- large volumes: chunked metrics -------------------------------------------------------------
def _pair(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    a = (rng.random(shape) * 1000).astype(dtype)
    a[:, : shape[1] // 4] = 0  # a background, so that the foreground metrics differ from the rest
    b = np.clip(a.astype(np.float64) + rng.normal(0, 20, shape), 0, 1000).astype(dtype)
    return a, b


@pytest.mark.parametrize("shape,dtype", [((23, 30, 27), np.uint16), ((9, 40, 33), np.uint8),
                                         ((14, 12, 13), np.float32)])
def test_chunked_metrics_equal_in_memory(shape, dtype):
    a, b = _pair(shape, dtype)
    ref = metrics.compute(a, b, lpips=False)
    for block in [(1, 1), (3, 4), (5, 100)]:
        got = metrics.compute_chunked(a, b, lpips=False, block=block, memory_mb=0.01)
        assert set(got) == set(ref)
        for k, v in ref.items():
            if isinstance(v, float):
                assert got[k] == pytest.approx(v, rel=1e-12, abs=1e-12, nan_ok=True), (block, k)
            else:
                assert got[k] == v, (block, k)
    # the blocks of the 3D SSIM map are the whole map's values (Gaussian window: bit for bit)
    R = float(a.max()) - float(a.min())
    _, full = metrics.ssim(a, b, R, full=True)
    assembled = np.full(a.shape, np.nan)
    for zs, ys, blk in metrics.ssim_map_blocks(a, b, R, block=(2, 3)):
        assembled[zs, ys] = blk
    if min(shape) >= 11:
        assert np.array_equal(assembled, full)
    else:  # uniform window: a running sum, equal to rounding
        np.testing.assert_allclose(assembled, full, rtol=1e-12, atol=1e-12)


def test_chunked_metrics_constant_and_exact():
    a = np.full((6, 12, 12), 7, np.uint8)
    got = metrics.compute_chunked(a, a.copy(), lpips=False, block=(2, 2))
    ref = metrics.compute(a, a.copy(), lpips=False)
    assert got["exact"] and np.isnan(got["psnr_3d"]) and np.isnan(got["ssim_3d"]) and "note" in got
    assert {k for k in got} == {k for k in ref}
    a, _ = _pair((12, 16, 16), np.uint16)
    got = metrics.compute_chunked(a, a.copy(), lpips=False, block=(3, 5))
    assert got["exact"] and got["psnr_3d"] == float("inf") and got["psnr_2d"] == float("inf")
    assert got["ssim_3d"] == pytest.approx(1.0)


def test_score_reads_memmaps_and_stays_below_one_float_copy(tmp_path):
    """A volume is scored from memory-mapped TIFFs, never as a whole float64 array."""
    a, b = _pair((64, 192, 24), np.uint16, seed=2)
    vio.write_volume(tmp_path / "orig.tif", a)
    vio.write_volume(tmp_path / "rec.tif", b)
    orig, rec = metrics.open_volume(tmp_path / "orig.tif"), metrics.open_volume(tmp_path / "rec.tif")
    assert isinstance(orig, np.memmap) and isinstance(rec, np.memmap)
    ref = metrics.compute(a, b, lpips=False)
    tracemalloc.start()
    try:
        got = metrics.compute_chunked(orig, rec, lpips=False, memory_mb=0.5)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    one_float_copy = a.size * 8
    assert peak < one_float_copy, f"peak {peak / 1e6:.2f} MB >= one float64 copy {one_float_copy / 1e6:.2f} MB"
    for k in ("psnr_2d", "psnr_3d", "ssim_2d", "ssim_3d", "psnr_fg", "ssim_fg", "mse"):
        assert got[k] == pytest.approx(ref[k], rel=1e-12), k


def test_plan_blocks_respects_budget():
    halo, win = 5, 11
    bz, by = metrics.plan_blocks((4000, 2048, 2048), 1024, halo, win)
    assert bz >= win and by >= win
    assert (bz + 2 * halo) * (by + 2 * halo) * 2048 * metrics.SSIM_BYTES_PER_VOXEL <= 1024 * 2**20
    bz, by = metrics.plan_blocks((20, 30, 30), 1024, halo, win)
    assert (bz, by) == (20, 30)  # small volumes: one block


# -- input safety --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../up", "a b", "x;rm -rf ~", "$(id)", "café", "a/b", ""])
def test_unsafe_names_are_rejected(name):
    with pytest.raises(VolbenchError, match="letters, digits"):
        check_config({"datasets": {name: {"synthetic": {"generator": "neuron"}}},
                      "codecs": {"zstd": {"rate_points": [{"level": 3}]}}})
    with pytest.raises(VolbenchError, match="letters, digits"):
        check_config({"datasets": {"ok": {"synthetic": {"generator": "neuron"}}},
                      "codecs": {name: {"codec": "zstd", "rate_points": [{"level": 3}]}}})


def test_rate_point_labels_are_safe_folder_names():
    from volbench.config import point_label

    with pytest.raises(VolbenchError):
        point_label({"label": "../../etc"})  # would start with a dot: refused
    with pytest.raises(VolbenchError):
        point_label({"label": "$( )"})  # nothing left: refused
    assert point_label({"crf": "1/2; rm"}) == "crf-12rm"


def test_http_urls_need_allow_http():
    sha = "0" * 64
    base = {"codecs": {"zstd": {"rate_points": [{"level": 3}]}}}
    with pytest.raises(VolbenchError, match="not https"):
        check_config({**base, "datasets": {"d": {"url": "http://example.org/v.tif", "sha256": sha}}})
    check_config({**base, "datasets": {"d": {"url": "http://example.org/v.tif", "sha256": sha, "allow_http": True}}})
    check_config({**base, "datasets": {"d": {"url": "https://example.org/v.tif", "sha256": sha}}})
    with pytest.raises(VolbenchError, match="sha256"):
        check_config({**base, "datasets": {"d": {"url": "https://example.org/v.tif"}}})
    from volbench.datasets.fetch import download

    with pytest.raises(VolbenchError, match="not https"):  # refused before any connection
        download("http://example.org/v.tif", Path("unused"), sha, "d")
    with pytest.raises(VolbenchError, match="not https"):
        download("ftp://example.org/v.tif", Path("unused"), sha, "d", allow_http=True)


def _tar(path: Path, members: dict[str, bytes], symlink: tuple[str, str] | None = None):
    with tarfile.open(path, "w") as tf:
        for name, data in members.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, _io.BytesIO(data))
        if symlink:
            ti = tarfile.TarInfo(symlink[0])
            ti.type = tarfile.SYMTYPE
            ti.linkname = symlink[1]
            tf.addfile(ti)


def test_archives_cannot_write_outside_their_folder(tmp_path):
    from volbench.datasets.fetch import extract_member

    dest = tmp_path / "extracted"
    outside = tmp_path / "evil.txt"
    for name in ("../evil.txt", "data/../../evil.txt", "/evil-abs.txt"):
        arc = tmp_path / "a.tar"
        _tar(arc, {"data/v.tif": b"ok", name: b"bad"})
        with pytest.raises(VolbenchError, match="outside its folder"):
            extract_member(arc, "data", dest, "d")
        z = tmp_path / "a.zip"
        with zipfile.ZipFile(z, "w") as zf:
            zf.writestr("data/v.tif", b"ok")
            zf.writestr(name, b"bad")
        with pytest.raises(VolbenchError, match="outside its folder"):
            extract_member(z, "data", dest, "d")
    assert not outside.exists()
    arc = tmp_path / "link.tar"
    _tar(arc, {"data/v.tif": b"ok"}, symlink=("data/link", "/etc/passwd"))
    with pytest.raises(VolbenchError, match="link"):
        extract_member(arc, "data", dest, "d")
    arc = tmp_path / "good.tar"
    _tar(arc, {"data/v.tif": b"ok", "other/x": b"x"})
    got = extract_member(arc, "data/v.tif", tmp_path / "good", "d")
    assert got.read_bytes() == b"ok" and got.is_relative_to(tmp_path / "good")


def test_snakemake_refuses_unsafe_dataset_name(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(CONFIG.replace("  da:\n", "  'da;touch pwned':\n"))
    proc = subprocess.run(snakemake_cmd(tmp_path, cfg, "-n"), env=snakemake_env(), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0
    assert "da;touch pwned" in proc.stdout + proc.stderr
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "results").exists()


# -- stale locks of a killed run ---------------------------------------------------------------------
def test_stale_locks_are_removed_only_when_their_run_is_gone(tmp_path):
    import json

    from volbench import runlock

    locks = tmp_path / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    record = tmp_path / ".snakemake" / runlock.RECORD
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        host = __import__("socket").gethostname()
        cases = [
            ([{"host": host, "pid": alive.pid, "start": runlock._start_time(alive.pid)}], False),  # still running
            ([{"host": "elsewhere", "pid": dead.pid, "start": "1"}], False),  # another login node: unknown
            ([{"host": host, "pid": alive.pid, "start": "1"}], True),  # pid reused by another process
            ([{"host": host, "pid": dead.pid, "start": "1"}], True),  # killed
        ]
        for runs, removed in cases:
            (locks / "0.input.lock").write_text("x")
            record.write_text(json.dumps(runs))
            assert runlock.clear_stale_locks(tmp_path, log=lambda m: None) is removed, runs
            assert (locks / "0.input.lock").exists() is not removed
            assert any(r["pid"] == os.getpid() for r in json.loads(record.read_text()))
    finally:
        alive.kill()
        alive.wait()


def test_jobs_left_running_by_a_killed_run_are_stopped(tmp_path, monkeypatch):
    """Issue 22, item 6: after a SIGKILL of snakemake its jobs keep running; the next run stops the
    processes that carry the dead run's identity (VOLBENCH_RUN), and no other process."""
    import json
    import socket

    from volbench import runlock

    monkeypatch.setenv(runlock.RUN_ENV, "")  # clear_stale_locks sets it for the jobs it starts
    host = socket.gethostname()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    killed = {"host": host, "pid": dead.pid, "start": "1"}
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    orphan = subprocess.Popen(sleeper, env={**os.environ, runlock.RUN_ENV: f"{host}:{dead.pid}:1"})
    bystanders = [subprocess.Popen(sleeper, env={**os.environ, runlock.RUN_ENV: rid})
                  for rid in (f"{host}:{os.getpid()}:{runlock._start_time(os.getpid())}", "elsewhere:1:1")]
    bystanders.append(subprocess.Popen(sleeper))
    try:
        (tmp_path / ".snakemake" / "locks").mkdir(parents=True)
        (tmp_path / ".snakemake" / "locks" / "0.input.lock").write_text("x")
        (tmp_path / ".snakemake" / runlock.RECORD).write_text(json.dumps([killed]))
        said = []
        assert runlock.clear_stale_locks(tmp_path, log=said.append)
        assert orphan.wait(timeout=15) == -signal.SIGTERM
        assert all(p.poll() is None for p in bystanders)
        assert any("stopped 1 job process(es)" in m and str(orphan.pid) in m for m in said), said
        me = f"{host}:{os.getpid()}:{runlock._start_time(os.getpid())}"
        assert os.environ[runlock.RUN_ENV] == me  # what this run's jobs carry
    finally:
        for p in [orphan, *bystanders]:
            if p.poll() is None:
                p.kill()
            p.wait()
