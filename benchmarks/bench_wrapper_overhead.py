"""Wrapper overhead: volbench's hevc and jpeg2000 codecs against the bare command-line tools.

One synthetic 16-bit volume (default 32x256x256, values 0..4000 so that hevc's 12-bit
mapping is the identity and both paths code exactly the same samples) is encoded and
decoded

* by volbench (``encode_volume`` / ``decode_bytes``: array in, container bytes out and back,
  everything included: sample mapping, padding, pipes, temp files, container packing);
* by the bare tools on files prepared beforehand (not timed):
  ``ffmpeg -f rawvideo -pix_fmt gray12le ... -c:v libx265 ... -f hevc out.hevc`` and back to
  raw gray12le; ``opj_compress -ImgDir`` over one little-endian raw file per slice and
  ``opj_decompress -ImgDir`` back to raw files (one process each, as a user would batch it).

Settings are the same on both sides (x265: preset, crf, frame-threads=1, pools=threads,
info=0; OpenJPEG: irreversible 9/7, the same ratio, 6 resolutions, the same thread count),
and the script checks it: the hevc bitstreams must be byte-identical and every JPEG 2000
slice must decode to the same samples. Each timing is the median of ``--repeats`` runs.

    PYTHONPATH=workflow python benchmarks/bench_wrapper_overhead.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from volbench.codecs.base import VolumeInfo, decode_bytes, encode_volume
from volbench.codecs.hevc import HEVC
from volbench.codecs.jpeg2000 import JPEG2000
from volbench import container


def synthetic(shape, seed=0, hi=4000):
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(0, 1, n) for n in shape], indexing="ij")
    f = np.zeros(shape)
    for _ in range(12):
        c = rng.uniform(0, 1, 3)
        s = rng.uniform(0.05, 0.3)
        f += rng.uniform(0.3, 1) * np.exp(-((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) / (2 * s * s))
    f += 0.02 * rng.standard_normal(shape)
    f = (f - f.min()) / (f.max() - f.min())
    return np.rint(f * hi).astype(np.uint16)


def timed(fn, repeats):
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def run(cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="32,256,256")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--crf", type=float, default=28.0)
    ap.add_argument("--preset", default="medium")
    ap.add_argument("--ratio", type=float, default=20.0)
    args = ap.parse_args(argv)
    shape = tuple(int(s) for s in args.shape.split(","))
    nz, ny, nx = shape
    vol = synthetic(shape)
    info = VolumeInfo(name="bench", threads=args.threads)
    ffmpeg, opj_c, opj_d = (shutil.which(t) for t in ("ffmpeg", "opj_compress", "opj_decompress"))
    if not (ffmpeg and opj_c and opj_d):
        sys.exit("needs ffmpeg, opj_compress and opj_decompress on PATH")
    HEVC.check_available()
    JPEG2000.check_available()
    versions = {**HEVC.versions(), **JPEG2000.versions()}  # warm the caches too
    rows = []
    with tempfile.TemporaryDirectory(prefix="volbench-bench-") as tmp:
        tmp = Path(tmp)
        # ---- HEVC --------------------------------------------------------------------------------
        hp = {"crf": args.crf, "preset": args.preset}
        assert ny >= 16 and nx >= 64 and ny % 8 == 0 and nx % 8 == 0, "pick a frame size hevc does not pad"
        enc_s, (data, _) = timed(lambda: encode_volume("hevc", hp, vol, info), args.repeats)
        dec_s, (out, _) = timed(lambda: decode_bytes(data), args.repeats)
        raw = tmp / "in.gray12"
        raw.write_bytes(vol.astype("<u2").tobytes())
        xp = f"log-level=error:info=0:frame-threads=1:pools={args.threads}:crf={args.crf:g}"
        enc_cmd = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-f", "rawvideo",
                   "-pix_fmt", "gray12le", "-s", f"{nx}x{ny}", "-framerate", "25", "-i", str(raw),
                   "-c:v", "libx265", "-preset", args.preset, "-x265-params", xp, "-f", "hevc", str(tmp / "b.hevc")]
        dec_cmd = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-f", "hevc",
                   "-i", str(tmp / "b.hevc"), "-f", "rawvideo", "-pix_fmt", "gray12le", "-vsync", "passthrough",
                   str(tmp / "b.raw")]
        benc_s, _ = timed(lambda: run(enc_cmd), args.repeats)
        bdec_s, _ = timed(lambda: run(dec_cmd), args.repeats)
        _, payload = container.unpack(data)
        same_stream = payload == (tmp / "b.hevc").read_bytes()
        bare_out = np.fromfile(tmp / "b.raw", "<u2").reshape(shape)
        assert np.array_equal(bare_out, out), "hevc: bare and volbench decodes differ"
        rows.append(("hevc", "encode", enc_s, benc_s, len(data), (tmp / "b.hevc").stat().st_size, same_stream))
        rows.append(("hevc", "decode", dec_s, bdec_s, None, None, None))

        # ---- JPEG 2000 --------------------------------------------------------------------------
        jp = {"ratio": args.ratio, "threads": args.threads}
        enc_s, (data, _) = timed(lambda: encode_volume("jpeg2000", jp, vol, info), args.repeats)
        dec_s, (out, _) = timed(lambda: decode_bytes(data), args.repeats)
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

        benc_s, _ = timed(bare_encode, args.repeats)
        bdec_s, _ = timed(bare_decode, args.repeats)
        bare_bytes = sum(f.stat().st_size for f in cdir.glob("*.J2K"))
        bare_out = np.stack([np.fromfile(cdir / f"s{z:04d}.rawl", "<u2").reshape(ny, nx) for z in range(nz)])
        same_samples = bool(np.array_equal(bare_out, out))
        rows.append(("jpeg2000", "encode", enc_s, benc_s, len(data), bare_bytes, same_samples))
        rows.append(("jpeg2000", "decode", dec_s, bdec_s, None, None, None))

    print(f"volume {nz}x{ny}x{nx} uint16 (values 0..4000), threads={args.threads}, "
          f"median of {args.repeats} runs")
    print(f"machine: {cpu_model()}, {__import__('os').cpu_count()} cores; python {platform.python_version()}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())))
    print(f"settings: hevc preset={args.preset} crf={args.crf:g}; jpeg2000 ratio={args.ratio:g} (9/7)")
    print()
    print(f"| codec | step | volbench s | bare tool s | ratio | volbench bytes | bare bytes | same output |")
    print(f"|---|---|---|---|---|---|---|---|")
    worst = 0.0
    for codec, step, v, b, vb, bb, same in rows:
        r = v / b
        worst = max(worst, r)
        print(f"| {codec} | {step} | {v:.3f} | {b:.3f} | {r:.2f}x | {vb if vb else ''} | {bb if bb else ''} | "
              f"{'' if same is None else ('yes' if same else 'NO')} |")
    print()
    print(f"worst ratio {worst:.2f}x (goal <= 1.15x)")


if __name__ == "__main__":
    main()
