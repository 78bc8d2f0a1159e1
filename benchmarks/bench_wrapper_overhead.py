"""Wrapper overhead: volbench's hevc and jpeg2000 codecs against the bare command-line tools.

One synthetic 16-bit volume (default: the 64x256x256 ``neuron`` volume of
volbench.datasets.synthetic, seed 0, values 0..~15600) is encoded and decoded

* by volbench (``encode_volume`` / ``decode_bytes``: array in, container bytes out and back,
  everything included: hevc's 16->12 bit sample mapping and its inverse, padding, pipes,
  temporary files, container packing and checksums);
* by the bare tools on files prepared beforehand (not timed):
  ``ffmpeg -f rawvideo -pix_fmt gray12le ... -c:v libx265 ... -f hevc out.hevc`` and back to
  raw gray12le, fed with the same 12-bit samples volbench codes (x265 takes at most 12 bits, so
  a bare user has to map the 16-bit volume too; volbench's mapping is counted on its side);
  ``opj_compress -ImgDir`` over one little-endian 16-bit raw file per slice and
  ``opj_decompress -ImgDir`` back to raw files (one process each, as a user would batch it).

Settings are the same on both sides (x265: preset, crf, frame-threads=1, pools=threads,
info=0; OpenJPEG: irreversible 9/7, the same ratio, 6 resolutions, the same thread count),
and the script checks it: the hevc bitstreams must be byte-identical and every JPEG 2000
slice must decode to the same samples. volbench and bare runs alternate (v, b, v, b, ...) so
that load from other processes hits both alike; each timing is the median of ``--repeats``.

    PYTHONPATH=workflow python benchmarks/bench_wrapper_overhead.py [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from volbench import container
from volbench.codecs.base import VolumeInfo, decode_bytes, encode_volume
from volbench.codecs.hevc import HEVC, from_12bit, to_12bit
from volbench.codecs.jpeg2000 import JPEG2000
from volbench.datasets import synthetic
from volbench.pipeline import cpu_model


class Timing(list):
    """The seconds of each run; formats as the median."""

    @property
    def median(self):
        return statistics.median(self)

    def __format__(self, spec):
        return format(self.median, spec)


def timed_pair(fa, fb, repeats):
    """Alternate fa and fb `repeats` times; return (fa Timing, fb Timing, last fa result)."""
    ta, tb, result = Timing(), Timing(), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fa()
        ta.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        fb()
        tb.append(time.perf_counter() - t0)
    return ta, tb, result


def run(cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def loadavg():
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--volume", default="neuron", choices=["neuron", "cells", "ultrasound"])
    ap.add_argument("--shape", default="64,256,256")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--crf", type=float, default=28.0)
    ap.add_argument("--preset", default="medium")
    ap.add_argument("--ratio", type=float, default=20.0)
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    shape = tuple(int(s) for s in args.shape.split(","))
    nz, ny, nx = shape
    vol = getattr(synthetic, args.volume)(shape, seed=0, dtype="uint16")
    info = VolumeInfo(name="bench", threads=args.threads)
    ffmpeg, opj_c, opj_d = (shutil.which(t) for t in ("ffmpeg", "opj_compress", "opj_decompress"))
    if not (ffmpeg and opj_c and opj_d):
        sys.exit("needs ffmpeg, opj_compress and opj_decompress on PATH")
    HEVC.check_available()
    JPEG2000.check_available()
    versions = {**HEVC.versions(), **JPEG2000.versions()}  # warm the caches too
    load_before = loadavg()
    rows = []
    with tempfile.TemporaryDirectory(prefix="volbench-bench-") as tmp:
        tmp = Path(tmp)
        # ---- HEVC --------------------------------------------------------------------------------
        hp = {"crf": args.crf, "preset": args.preset}
        assert ny >= 16 and nx >= 64 and ny % 8 == 0 and nx % 8 == 0, "pick a frame size hevc does not pad"
        raw = tmp / "in.gray12"
        mapped, transform = to_12bit(vol)  # the samples volbench codes (untimed for the bare side)
        raw.write_bytes(mapped.astype("<u2").tobytes())
        xp = f"log-level=error:info=0:frame-threads=1:pools={args.threads}:crf={args.crf:g}"
        enc_cmd = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-f", "rawvideo",
                   "-pix_fmt", "gray12le", "-s", f"{nx}x{ny}", "-framerate", "25", "-i", str(raw),
                   "-c:v", "libx265", "-preset", args.preset, "-x265-params", xp, "-f", "hevc", str(tmp / "b.hevc")]
        dec_cmd = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-f", "hevc",
                   "-i", str(tmp / "b.hevc"), "-f", "rawvideo", "-pix_fmt", "gray12le", "-vsync", "passthrough",
                   str(tmp / "b.raw")]
        enc_s, benc_s, (data, _) = timed_pair(lambda: encode_volume("hevc", hp, vol, info), lambda: run(enc_cmd),
                                              args.repeats)
        dec_s, bdec_s, (out, _) = timed_pair(lambda: decode_bytes(data), lambda: run(dec_cmd), args.repeats)
        _, payload = container.unpack(data)
        same_stream = payload == (tmp / "b.hevc").read_bytes()
        bare_mapped = np.fromfile(tmp / "b.raw", "<u2").reshape(shape)
        assert np.array_equal(from_12bit(bare_mapped, transform, vol.dtype), out), "hevc: decodes differ"
        rows.append(("hevc", "encode", enc_s, benc_s, len(data), (tmp / "b.hevc").stat().st_size, same_stream))
        rows.append(("hevc", "decode", dec_s, bdec_s, None, None, None))

        # ---- JPEG 2000 --------------------------------------------------------------------------
        jp = {"ratio": args.ratio, "threads": args.threads}
        src, cdir = tmp / "slices", tmp / "j2k"
        for d in (src, cdir):
            d.mkdir()
        for z in range(nz):
            (src / f"s{z:04d}.rawl").write_bytes(vol[z].astype("<u2").tobytes())

        def bare_encode():
            for f in cdir.iterdir():
                f.unlink()
            # -ImgDir writes <name>.J2K next to the inputs; move them out before decoding
            run([opj_c, "-ImgDir", str(src), "-OutFor", "J2K", "-F", f"{nx},{ny},1,16,u", "-I",
                 "-r", f"{args.ratio:g}", "-n", "6", "-threads", str(args.threads)])
            for f in src.glob("*.J2K"):
                f.rename(cdir / f.name)

        def bare_decode():
            for f in cdir.glob("*.rawl"):
                f.unlink()
            run([opj_d, "-ImgDir", str(cdir), "-OutFor", "RAWL", "-threads", str(args.threads)])

        enc_s, benc_s, (data, _) = timed_pair(lambda: encode_volume("jpeg2000", jp, vol, info), bare_encode,
                                              args.repeats)
        dec_s, bdec_s, (out, _) = timed_pair(lambda: decode_bytes(data), bare_decode, args.repeats)
        bare_bytes = sum(f.stat().st_size for f in cdir.glob("*.J2K"))
        bare_out = np.stack([np.fromfile(cdir / f"s{z:04d}.rawl", "<u2").reshape(ny, nx) for z in range(nz)])
        same_samples = bool(np.array_equal(bare_out, out))
        rows.append(("jpeg2000", "encode", enc_s, benc_s, len(data), bare_bytes, same_samples))
        rows.append(("jpeg2000", "decode", dec_s, bdec_s, None, None, None))

    load_after = loadavg()
    print(f"volume {args.volume} {nz}x{ny}x{nx} uint16 (values {int(vol.min())}..{int(vol.max())}; hevc mapping "
          f"{transform['kind']}), threads={args.threads}, median of {args.repeats} alternating runs")
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; load average before {load_before}, "
          f"after {load_after}; python {platform.python_version()}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())))
    print(f"settings: hevc preset={args.preset} crf={args.crf:g}; jpeg2000 ratio={args.ratio:g} (9/7, 6 levels)")
    print()
    print("| codec | step | volbench s (min-max) | bare tool s (min-max) | ratio of medians | volbench bytes "
          "| bare bytes | same output |")
    print("|---|---|---|---|---|---|---|---|")
    worst = 0.0
    for codec, step, v, b, vb, bb, same in rows:
        r = v.median / b.median
        worst = max(worst, r)
        check = "" if same is None else ("yes" if same else "NO")
        print(f"| {codec} | {step} | {v:.3f} ({min(v):.3f}-{max(v):.3f}) | {b:.3f} ({min(b):.3f}-{max(b):.3f}) | "
              f"{r:.2f}x | {vb or ''} | {bb or ''} | {check} |")
    print()
    print(f"worst ratio {worst:.2f}x (goal <= 1.15x)")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "volume": args.volume, "shape": list(shape), "threads": args.threads, "repeats": args.repeats,
            "cpu": cpu_model(), "cores": os.cpu_count(), "load": [load_before, load_after], "versions": versions,
            "rows": [dict(zip(("codec", "step", "volbench_s", "bare_s", "volbench_bytes", "bare_bytes", "same"),
                              (c, st, list(v), list(b), vb, bb, same))) for c, st, v, b, vb, bb, same in rows]},
            indent=1))


if __name__ == "__main__":
    main()
