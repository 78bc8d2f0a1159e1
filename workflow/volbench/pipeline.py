"""The work behind each rule: encode, decode, score one cell (dataset x codec x rate point).

encode/decode run the codec in a child process (`isolated`), so that a codec that crashes, is
killed for memory, or raises, is recorded as a failed cell with the reason instead of taking the
benchmark down; the summary then marks the cell failed. Errors in the user's input (datasets,
config) are not contained: they stop the run with a one-line message.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import container, io, summary
from .codecs.base import VolumeInfo, decode_bytes, encode_volume
from .errors import VolbenchError
from .torchenv import seed_everything

VBC = "volume.vbc"


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _info_from_meta(meta: dict, device: str, seed: int, threads: int, workdir: Path | None) -> VolumeInfo:
    return VolumeInfo(name=meta.get("name", "volume"), spacing=tuple(meta.get("spacing", (1, 1, 1))),
                      sigma_z=meta.get("sigma_z"), modality=meta.get("modality", "unknown"), seed=seed,
                      device=device, threads=threads, workdir=workdir)


def encode_cell(volume_path, meta_path, codec_type: str, params: dict, out_dir, *, module: str | None = None,
                device: str = "auto", seed: int = 0, threads: int = 1, tolerance: float = 0.05) -> dict:
    """Encode in this process; writes out_dir/volume.vbc and returns the record."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vol = io.read_volume(volume_path)
    meta = io.read_json(meta_path)
    info = _info_from_meta(meta, device, seed, threads, out_dir)
    seed_everything(seed)
    data, record = encode_volume(codec_type, params, vol, info, module=module, tolerance=tolerance)
    io.atomic_write_bytes(out_dir / VBC, data, fsync=True)
    record.update({"status": "ok", "file": VBC, "n_voxels": int(vol.size), "original_bytes": int(vol.nbytes),
                   "bpv": 8.0 * len(data) / vol.size, "encode_peak_mb": _peak_mb(), "device": device,
                   "seed": seed, "threads": threads})
    return record


def decode_cell(vbc_path, out_dir, *, device: str = "auto", modules=()) -> dict:
    """Decode the compressed file alone; writes out_dir/volume.tif and returns the record.
    `modules`: the codec modules the run's config names, the only ones the decoder may import
    (never a module a file names by itself: codecs.base.decoder_for)."""
    vbc_path, out_dir = Path(vbc_path), Path(out_dir)
    data = vbc_path.read_bytes()
    header, _ = container.unpack(data, str(vbc_path))
    try:  # import the codec's libraries before the clock starts
        from .codecs.base import check_header, decoder_for

        kind, _, _, _, module = check_header(header, str(vbc_path))
        decoder_for(kind, module, modules, str(vbc_path)).versions()
    except Exception:
        pass  # decode_bytes reports a bad header or a codec it may not load clearly
    t0 = time.perf_counter()
    vol, header = decode_bytes(data, str(vbc_path), device=device, modules=modules)
    seconds = time.perf_counter() - t0
    io.write_volume(out_dir / "volume.tif", vol)
    return {"status": "ok", "decode_seconds": seconds, "decode_mvox_s": vol.size / seconds / 1e6 if seconds > 0 else None,
            "decode_peak_mb": _peak_mb(), "bytes_read": len(data), "codec": header["codec"], "device": device}


def isolated(argv: list[str], record_path: Path, what: str) -> dict:
    """Run `volbench <argv> --in-process` in a child; on failure write a failed record."""
    cmd = [sys.executable, "-m", "volbench.cli", *argv, "--in-process"]
    record_path.unlink(missing_ok=True)  # only the child's own record counts
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=sys.stderr, stderr=subprocess.PIPE, text=True)
    tail: list[str] = []
    assert proc.stderr is not None
    for line in proc.stderr:
        sys.stderr.write(line)
        tail.append(line.rstrip())
        tail = tail[-40:]
    rc = proc.wait()
    if rc == 0 and record_path.exists():
        return io.read_json(record_path)
    if rc < 0:
        reason = f"killed by signal {signal.Signals(-rc).name}" + (" (out of memory?)" if -rc == signal.SIGKILL else "")
    else:
        msgs = [ln for ln in tail if ln.startswith("volbench: error:")]
        reason = msgs[-1].removeprefix("volbench: error: ") if msgs else (tail[-1] if tail else f"exit code {rc}")
    rec = {"status": "failed", "error": f"{what} failed: {reason}", "returncode": rc,
           "seconds": time.perf_counter() - t0}
    if record_path.exists():  # what the child recorded of its failure (a damaged input: `corrupt`)
        child = io.read_json(record_path)
        if isinstance(child, dict) and child.get("corrupt"):
            rec["corrupt"] = True
    io.write_json(record_path, rec)
    return rec


def score_cell(original, meta_path, decoded_dir, encode_dir, *, cell: dict, lpips_cfg: dict,
               foreground_threshold: float) -> dict:
    from . import metrics

    meta = io.read_json(meta_path)
    cell = dict(cell)
    p001 = cell.pop("protocol_001", None)  # seed 001's protocol on this cell (metrics.protocol_001)
    enc = _read_record(Path(encode_dir) / "encode.json")
    dec = _read_record(Path(decoded_dir) / "decode.json")
    row: dict[str, Any] = {**cell, "original_bytes": meta["original_bytes"], "n_voxels": meta["n_voxels"]}
    row["params"] = json.dumps(enc.get("params", cell.get("params", {})), sort_keys=True)
    rc = enc.get("rate_control") or {}
    row.update({"target_bpp": rc.get("target_bpp"), "knob": rc.get("knob"), "knob_value": rc.get("knob_value"),
                "versions": json.dumps(enc.get("versions", {}), sort_keys=True)})
    # how the tables and figures present the codec (Codec.describe), also on a failed cell
    row.update({k: enc[k] for k in summary.CODEC_COLUMNS if k in enc})
    if enc.get("status") != "ok" or dec.get("status") != "ok":
        row.update({"status": "failed", "error": enc.get("error") if enc.get("status") != "ok" else dec.get("error")})
        return row
    vbc = Path(encode_dir) / VBC
    nbytes = vbc.stat().st_size
    # memmaps, scored block by block: a volume larger than memory is never held whole
    # (metrics.compute_chunked; VOLBENCH_METRICS_MEMORY_MB bounds the working arrays)
    for p in (Path(original), Path(decoded_dir) / "volume.tif"):
        if not p.exists():
            raise VolbenchError(f"{p}: volume does not exist; run the job that makes it first")
    orig = metrics.open_volume(original)
    rec = metrics.open_volume(Path(decoded_dir) / "volume.tif")
    m = metrics.compute_chunked(orig, rec, foreground_threshold=foreground_threshold,
                                lpips=lpips_cfg.get("enabled", True),
                                lpips_slices_per_axis=int(lpips_cfg.get("slices_per_axis", 4)),
                                lpips_seed=int(lpips_cfg.get("seed", 0)))
    # 2D metrics from the codec's rendered slices where its paper measures them there
    # (Codec.rendered_slices: the slice codecs of seed 000), from the compressed file alone
    from .codecs.base import get_codec

    source_2d = summary.SOURCE_VOLUME
    slices = get_codec(cell["codec_type"], cell.get("module")).rendered_slices(str(vbc))
    if slices is not None:
        m.update(metrics.slice_metrics_2d(orig, slices, m["data_range"]))
        source_2d = summary.SOURCE_RENDERED
    if p001 is not None:
        m.update(metrics.protocol_001(orig, rec, seed=int(p001.get("seed", 0)), lpips=bool(p001.get("lpips", True)),
                                      range_=(m["data_min"], m["data_range"])))
    row.update({
        **{k: m[k] for k in metrics.PROTOCOL_001_COLUMNS if k in m},
        "metrics_2d_source": source_2d,
        "bytes": nbytes,
        "compression_ratio": meta["original_bytes"] / nbytes,
        "bpv": 8.0 * nbytes / meta["n_voxels"],
        **{k: m[k] for k in (*summary.METRICS, "mse")},
        **{k: enc[k] for k in summary.FILE_STATS if k in enc},
        "foreground_fraction": m["foreground_fraction"],
        "lossless": m["exact"],
        "encode_seconds": enc.get("encode_seconds"),
        "decode_seconds": dec.get("decode_seconds"),
        "decode_mvox_s": dec.get("decode_mvox_s"),
        "encode_peak_mb": enc.get("encode_peak_mb"),
        "decode_peak_mb": dec.get("decode_peak_mb"),
        "status": "ok",
        "error": m.get("note", ""),
    })
    if rc:
        row["rate_hit"] = rc.get("hit")
        # a target_bpp the codec could not reach: the cell ran (status ok), at the closest rate
        row["target_missed"] = not rc.get("hit", True)
    return row


def _read_record(path: Path) -> dict:
    if not path.exists():
        return {"status": "failed", "error": f"{path.name} missing"}
    return io.read_json(path)


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what platform reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def environment() -> dict:
    """Library versions and hardware, recorded next to the results."""
    from importlib.metadata import PackageNotFoundError, version

    libs = {}
    for pkg in ("numpy", "scipy", "scikit-image", "tifffile", "torch", "torchvision", "lpips", "zstandard", "zfpy",
                "glymur", "ffmpeg-python", "snakemake", "h5py", "zarr", "nibabel", "bjontegaard", "matplotlib", "pandas"):
        try:
            libs[pkg] = version(pkg)
        except PackageNotFoundError:
            libs[pkg] = None
    cpu = cpu_model()
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except Exception:
        pass
    ffmpeg = shutil.which("ffmpeg")
    ffv = None
    if ffmpeg:
        try:
            ffv = subprocess.run([ffmpeg, "-version"], capture_output=True, text=True).stdout.splitlines()[0]
        except (OSError, IndexError):
            pass
    return {"python": platform.python_version(), "platform": platform.platform(), "cpu": cpu,
            "cpu_count": os.cpu_count(), "gpu": gpu, "ffmpeg": ffv, "libraries": libs}
