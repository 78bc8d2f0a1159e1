"""Datasets: readers, generators, canonical form, downloads, and every bad-input case."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
import zipfile

import numpy as np
import pytest
import tifffile

from volbench.datasets import fetch, prepare, readers, synthetic
from volbench.errors import VolbenchError
from volbench.io import read_json, read_volume

# -- generators ---------------------------------------------------------------------------------


@pytest.mark.parametrize("gen", ["neuron", "cells", "ultrasound"])
def test_generators_deterministic(gen):
    a = synthetic.generate({"generator": gen, "shape": [8, 40, 36], "seed": 2})
    b = synthetic.generate({"generator": gen, "shape": [8, 40, 36], "seed": 2})
    c = synthetic.generate({"generator": gen, "shape": [8, 40, 36], "seed": 3})
    assert a.shape == (8, 40, 36)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_generator_properties():
    n = synthetic.neuron(shape=(32, 96, 96), seed=0)
    assert n.dtype == np.uint16
    lo, hi = float(n.min()), float(n.max())
    occ = float((n > lo + 0.1 * (hi - lo)).mean())
    assert 0.05 <= occ <= 0.25, occ  # sparse, tube-like
    c = synthetic.cells(shape=(24, 96, 96), seed=0)
    assert c.dtype == np.uint16 and c.max() > 4 * np.median(c)
    u = synthetic.ultrasound(shape=(24, 96, 96), seed=0)
    assert u.dtype == np.uint8
    # finite slice thickness: neighbouring slices correlate more than neighbouring columns would
    # without axial blur (speckle is independent per voxel before the blur)
    f = u.astype(float)
    cz = np.corrcoef(f[1:].ravel(), f[:-1].ravel())[0, 1]
    assert cz > 0.5


def test_unknown_generator_names_dataset():
    with pytest.raises(VolbenchError, match="dataset d1: unknown synthetic generator"):
        synthetic.generate({"generator": "galaxy"}, "d1")


# -- readers --------------------------------------------------------------------------------------


@pytest.fixture
def vol(rng):
    return rng.integers(0, 4000, (6, 10, 12)).astype(np.uint16)


def _roundtrip(tmp_path, name, entry_extra, vol, writer):
    p = tmp_path / name
    writer(p)
    meta = prepare.prepare("d", {"path": str(p), **entry_extra}, tmp_path / "out")
    return read_volume(tmp_path / "out" / "volume.tif"), meta


def test_read_tiff(tmp_path, vol):
    out, meta = _roundtrip(tmp_path, "v.tif", {}, vol, lambda p: tifffile.imwrite(p, vol))
    assert np.array_equal(out, vol)
    assert meta["shape"] == [6, 10, 12] and meta["dtype"] == "uint16"
    assert meta["original_bytes"] == vol.nbytes


def test_read_ome_tiff_multichannel_needs_channel(tmp_path, rng):
    v = rng.integers(0, 255, (5, 2, 8, 9)).astype(np.uint8)
    p = tmp_path / "v.ome.tif"
    tifffile.imwrite(p, v, metadata={"axes": "ZCYX"}, ome=True)
    with pytest.raises(VolbenchError, match=r"dataset d: multichannel .*set `channel:`"):
        prepare.prepare("d", {"path": str(p)}, tmp_path / "o")
    assert not (tmp_path / "o" / "volume.tif").exists()
    prepare.prepare("d", {"path": str(p), "channel": 1}, tmp_path / "o")
    assert np.array_equal(read_volume(tmp_path / "o" / "volume.tif"), v[:, 1])


def test_read_nifti(tmp_path, vol):
    import nibabel as nib

    xyz = np.transpose(vol, (2, 1, 0))
    out, _ = _roundtrip(tmp_path, "v.nii.gz", {}, vol,
                        lambda p: nib.save(nib.Nifti1Image(xyz, np.eye(4)), str(p)))
    assert np.array_equal(out, vol)


def test_read_hdf5_with_key(tmp_path, vol):
    import h5py

    def w(p):
        with h5py.File(p, "w") as f:
            f["a/vol"] = vol
            f["b"] = np.zeros(3)

    p = tmp_path / "v.h5"
    w(p)
    with pytest.raises(VolbenchError, match="set `key:`"):
        readers.read(p, None, "d")
    arr, _ = readers.read(p, None, "d", key="a/vol")
    assert np.array_equal(arr, vol)


def test_read_zarr(tmp_path, vol):
    import zarr

    p = tmp_path / "v.zarr"
    z = zarr.open(str(p), mode="w", shape=vol.shape, dtype=vol.dtype, chunks=(2, 5, 6))
    z[...] = vol
    out, _ = _roundtrip(tmp_path, "v2.zarr", {}, vol, lambda q: q.symlink_to(p))
    assert np.array_equal(out, vol)


def test_read_raw(tmp_path, vol):
    p = tmp_path / "v.raw"
    p.write_bytes(b"\x00" * 16 + vol.tobytes())
    entry = {"format": "raw", "raw": {"shape": list(vol.shape), "dtype": "uint16", "offset": 16}}
    out, _ = _roundtrip(tmp_path, "v.raw", entry, vol, lambda q: None)
    assert np.array_equal(out, vol)


def test_scan_axis_crop_downsample(tmp_path, rng):
    v = rng.integers(0, 1000, (8, 12, 10)).astype(np.uint16)
    # crop and downsample name the canonical axes: after the scan axis X has become the first
    # (z) axis, the file's Z is y and the file's Y is x
    e = {"scan_axis": "X", "crop": {"x": [2, 10]}, "downsample": [1, 2, 1]}
    arr = prepare.canonicalise("d", v, "ZYX", e)
    ref = np.transpose(v, (2, 0, 1))[:, :, 2:10].astype(float)
    ref = np.rint(ref.reshape(10, 4, 2, 8).mean(axis=2)).astype(np.uint16)
    assert arr.shape == (10, 4, 8)
    assert np.array_equal(arr, ref)


# -- bad input: one line naming the dataset, nothing half-written ---------------------------------


def _prep_cli(tmp_path, entry, name="bad1"):
    out = tmp_path / "results" / "data" / name
    r = subprocess.run([sys.executable, "-m", "volbench.cli", "prepare", "--name", name,
                        "--entry", json.dumps(entry), "--out-dir", str(out)],
                       capture_output=True, text=True)
    assert r.returncode != 0
    err = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(err) == 1, r.stderr  # one line, no traceback
    assert f"dataset {name}" in err[0]
    assert not (out / "volume.tif").exists() and not (out / "meta.json").exists()
    return err[0]


def test_truncated_tiff(tmp_path, vol):
    p = tmp_path / "v.tif"
    tifffile.imwrite(p, vol)
    p.write_bytes(p.read_bytes()[: 200])
    msg = _prep_cli(tmp_path, {"path": str(p)})
    assert "cannot read v.tif" in msg


def test_unreadable_garbage(tmp_path):
    p = tmp_path / "v.h5"
    p.write_bytes(b"this is not hdf5")
    assert "cannot read v.h5 as hdf5" in _prep_cli(tmp_path, {"path": str(p)})


def test_missing_file(tmp_path):
    assert "does not exist" in _prep_cli(tmp_path, {"path": str(tmp_path / "none.tif")})


def test_nan_inf(tmp_path):
    v = np.ones((4, 8, 8), np.float32)
    v[1, 2, 3] = np.nan
    v[2, 2, 3] = np.inf
    p = tmp_path / "v.tif"
    tifffile.imwrite(p, v)
    assert "2 NaN/Inf voxels" in _prep_cli(tmp_path, {"path": str(p)})


def test_2d_image(tmp_path):
    p = tmp_path / "v.tif"
    tifffile.imwrite(p, np.zeros((20, 20), np.uint8))
    assert "expected a 3D volume, got a 2D array" in _prep_cli(tmp_path, {"path": str(p)})


def test_4d_volume(tmp_path):
    p = tmp_path / "v.npy"
    np.save(p, np.zeros((2, 3, 8, 8), np.uint8))
    msg = _prep_cli(tmp_path, {"path": str(p)})
    assert "4D array" in msg and "`channel:`" in msg


def test_unsupported_dtype(tmp_path):
    p = tmp_path / "v.npy"
    np.save(p, np.zeros((3, 8, 8), np.int64))
    assert "unsupported dtype int64" in _prep_cli(tmp_path, {"path": str(p)})


def test_empty_volume(tmp_path):
    p = tmp_path / "v.npy"
    np.save(p, np.zeros((3, 8, 8), np.uint8))
    assert "crop z: [1, 1] outside" in _prep_cli(tmp_path, {"path": str(p), "crop": {"z": [1, 1]}})
    np.save(p, np.zeros((0, 8, 8), np.uint8))
    assert "empty" in _prep_cli(tmp_path, {"path": str(p)})


def test_constant_volume_is_accepted(tmp_path):
    # PSNR is undefined for a constant volume: prepared fine, reported as NaN by the metrics
    p = tmp_path / "v.npy"
    np.save(p, np.full((3, 8, 8), 7, np.uint16))
    meta = prepare.prepare("c", {"path": str(p)}, tmp_path / "o")
    assert meta["value_min"] == meta["value_max"] == 7


# -- downloads -------------------------------------------------------------------------------------


def test_download_checksum(tmp_path, vol):
    src = tmp_path / "src.tif"
    tifffile.imwrite(src, vol)
    good = hashlib.sha256(src.read_bytes()).hexdigest()
    dest = tmp_path / "dl" / "v.tif"
    fetch.download(src.as_uri(), dest, good, "d", retries=1)
    assert dest.read_bytes() == src.read_bytes()
    dest2 = tmp_path / "dl" / "w.tif"
    with pytest.raises(VolbenchError, match="dataset d: checksum mismatch"):
        fetch.download(src.as_uri(), dest2, "0" * 64, "d", retries=1)
    assert list((tmp_path / "dl").iterdir()) == [dest]  # no partial file left


def test_fetch_cli_checksum_mismatch_leaves_nothing(tmp_path, vol):
    src = tmp_path / "src.tif"
    tifffile.imwrite(src, vol)
    out = tmp_path / "resources" / "downloads" / "dsx" / "v.tif"
    r = subprocess.run([sys.executable, "-m", "volbench.cli", "fetch", "--name", "dsx", "--entry",
                        json.dumps({"url": src.as_uri(), "sha256": "ab" * 32}), "--out", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "dataset dsx: checksum mismatch" in r.stderr
    assert not out.exists() and not any(out.parent.iterdir())  # no partial or temporary file


def test_http_refused():
    with pytest.raises(VolbenchError, match="not https"):
        fetch.download("http://example.org/v.tif", "/nonexistent/x", "0" * 64, "d")


def test_download_retries_then_clear_error(tmp_path):
    with pytest.raises(VolbenchError, match="failed after 2 tries"):
        fetch.download((tmp_path / "missing.tif").as_uri(), tmp_path / "x", "0" * 64, "d", retries=2)


def test_archive_member_and_traversal(tmp_path, vol):
    buf = io.BytesIO()
    tifffile.imwrite(buf, vol)
    arch = tmp_path / "a.zip"
    with zipfile.ZipFile(arch, "w") as zf:
        zf.writestr("data/v.tif", buf.getvalue())
    got = fetch.extract_member(arch, "data/v.tif", tmp_path / "ex", "d")
    assert np.array_equal(tifffile.imread(got), vol)

    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../../outside.tif", b"x")
        zf.writestr("v.tif", buf.getvalue())
    with pytest.raises(VolbenchError, match="outside its folder"):
        fetch.extract_member(evil, "v.tif", tmp_path / "ex2", "d")
    assert not (tmp_path / "outside.tif").exists()

    evil_tar = tmp_path / "evil.tar"
    with tarfile.open(evil_tar, "w") as tf:
        ti = tarfile.TarInfo("v.tif")
        ti.type = tarfile.SYMTYPE
        ti.linkname = "/etc/passwd"
        tf.addfile(ti)
    with pytest.raises(VolbenchError, match="link or device"):
        fetch.extract_member(evil_tar, "v.tif", tmp_path / "ex3", "d")


# -- issue 22, item 6 --------------------------------------------------------------------------------


def test_4d_tiff_without_axes_says_how_to_set_axes_and_channel(tmp_path):
    """A plain 4D TIFF does not name its axes (tifffile reads QQYX): the message says to set `axes:`
    and `channel:`, as for .npy, instead of blaming an axis; with both set it is read."""
    p = tmp_path / "v.tif"
    vol = np.arange(16 * 2 * 8 * 9, dtype=np.uint16).reshape(16, 2, 8, 9)
    tifffile.imwrite(p, vol)
    for entry in ({"path": str(p)}, {"path": str(p), "channel": 0}):
        msg = _prep_cli(tmp_path, entry)
        assert "`axes:`" in msg and "`channel:`" in msg and "crop the file" not in msg, msg
    assert "`channel: 0` needs a C axis" in _prep_cli(tmp_path, {"path": str(p), "channel": 0})
    meta = prepare.prepare("d", {"path": str(p), "axes": "ZCYX", "channel": 1}, tmp_path / "ok")
    assert meta["shape"] == [16, 8, 9]
    assert np.array_equal(read_volume(tmp_path / "ok" / "volume.tif"), vol[:, 1])


def test_zip_symlink_members_are_refused(tmp_path):
    import stat

    arch = tmp_path / "link.zip"
    with zipfile.ZipFile(arch, "w") as zf:
        info = zipfile.ZipInfo("data/v.tif")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(VolbenchError, match="link or device; refusing"):
        fetch.extract_member(arch, "data", tmp_path / "ex", "d")
    assert not (tmp_path / "ex" / "data" / "v.tif").exists()


@pytest.mark.parametrize("kind", ["traversal", "link", "no member"])
def test_refused_archive_leaves_nothing_in_downloads(tmp_path, vol, kind):
    buf = io.BytesIO()
    tifffile.imwrite(buf, vol)
    arch = tmp_path / "a.tar"
    with tarfile.open(arch, "w") as tf:
        ti = tarfile.TarInfo("data/v.tif")
        ti.size = len(buf.getvalue())
        tf.addfile(ti, io.BytesIO(buf.getvalue()))
        if kind != "no member":
            ti = tarfile.TarInfo("data/../../evil.tif" if kind == "traversal" else "data/link")
            if kind == "link":
                ti.type, ti.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tf.addfile(ti, io.BytesIO(b""))
    sha = hashlib.sha256(arch.read_bytes()).hexdigest()
    out = tmp_path / "resources" / "downloads" / "dsx" / "v.tif"
    entry = {"url": arch.as_uri(), "sha256": sha, "member": "data" if kind != "no member" else "other/v.tif"}
    r = subprocess.run([sys.executable, "-m", "volbench.cli", "fetch", "--name", "dsx", "--entry", json.dumps(entry),
                        "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 1 and "dataset dsx: archive" in r.stderr, r.stderr
    assert not out.exists() and sorted(p.name for p in out.parent.iterdir()) == []  # no archive.download, no extracted/
