"""HEVC (x265 through ffmpeg): the Z slices of a volume are the frames of a monochrome video.

Encoding pipes raw frames into ``ffmpeg ... -c:v libx265 -f hevc pipe:`` (via the
ffmpeg-python package) and keeps the whole Annex-B elementary stream as the payload;
decoding pipes it back through ffmpeg's HEVC decoder, whose raw output is read straight into
a preallocated array of the size the header promises. No temporary files.

Sample mapping (recorded in the codec header under ``transform``):

* uint8 volumes are coded as 8-bit gray (``gray``), unchanged.
* every other integer volume is coded as 12-bit gray (``gray12le``; x265 has no higher
  monochrome depth), after ``m = round((v - min) / scale)``:

  - ``identity``: the values already lie in 0..4095, ``m = v`` (min 0, scale 1);
  - ``offset``: the value range max-min fits in 12 bits, ``m = v - min`` (scale 1), exact;
  - ``scale``: a wider range, ``scale = (max - min) / 4095`` (lossy even with ``lossless``).

  Decoding computes ``v = round(m * scale + min)``, clipped to the dtype's range, and restores
  the original dtype and shape. Float volumes are refused (convert them to integers first).
  For 8/16-bit inputs both directions are evaluated through a table of all 2**16 inputs (one
  gather instead of several float64 passes, 4x faster on 4 Mvoxel volumes, identical result).

Frame size: x265 3.5 writes out of bounds in its lookahead (Lookahead::cuTree) for narrow
monochrome pictures: valgrind reports invalid writes for every width below 56 tried (16..48,
17, 33..35), and such encodes abort with heap corruption at random (e.g. 33x33, 40x32);
widths 56..168 and heights 16..104 were clean. x265 also refuses pictures below 16x16.
Frames are therefore padded by edge replication to multiples of 8, at least ``MIN_WIDTH``
wide and ``MIN_HEIGHT`` high; the decoder crops (``pad`` in the header). The padding's bytes
are counted like all others.

Executable: ``ffmpeg`` on PATH, or the one named by the environment variable
``VOLBENCH_FFMPEG``; it must list the libx265 encoder (``ffmpeg -encoders``), otherwise
check_available raises CodecUnavailable naming what to install.

Determinism: ``frame-threads=1`` (the number of frame threads changes x265's output, and
its automatic value depends on the core count) and ``pools=<threads>`` (wavefront threads,
which do not change the output). ``info=0`` drops x265's version/options SEI text, which
no decoder needs. ``preset``, ``crf``, ``intra`` (``keyint=1``), ``lossless``
(``lossless=1``) and ``x265_params`` (``key=value:key=value``, appended last so it can
override the above) map onto x265 options. ``crf`` may be fractional (x265 accepts
fractional CRF), which lets target_bpp bisection land within 5%; below 0 (down to -24)
it is allowed for 12-bit coding only (x265 allows CRF down to -QpBdOffset).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import re
import shutil
import subprocess
import threading
from typing import Any

import numpy as np

from ..errors import REENCODE, CodecUnavailable, CorruptFile, VolbenchError
from .base import Codec, Encoded, VolumeInfo, bisect_rate

log = logging.getLogger("volbench.codecs.hevc")

INSTALL_HINT = "install ffmpeg with libx265: apt-get install ffmpeg"
#: environment variable naming the ffmpeg executable to use (default: ffmpeg on PATH)
FFMPEG_ENV = "VOLBENCH_FFMPEG"
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
           "veryslow", "placebo")
BITS_HIGH = 12
MAX_HIGH = (1 << BITS_HIGH) - 1
#: smallest width and height given to x265 (see the module docstring)
MIN_WIDTH = 64
MIN_HEIGHT = 16
ALIGN = 8
CRF_MIN_HIGH = -6 * (BITS_HIGH - 8)  # -QpBdOffset for 12-bit
FPS = 25


def _ffmpeg_exe() -> str:
    """The ffmpeg executable: $VOLBENCH_FFMPEG when set (a path or a name on PATH), else ffmpeg on PATH."""
    want = os.environ.get(FFMPEG_ENV, "").strip()
    if want:
        path = shutil.which(want)
        if path is None:
            raise CodecUnavailable(f"codec hevc: {FFMPEG_ENV}={want} is not an executable; "
                                   f"point it at an ffmpeg built with libx265 or unset it ({INSTALL_HINT})")
        return path
    path = shutil.which("ffmpeg")
    if path is None:
        raise CodecUnavailable(f"codec hevc: ffmpeg not found on PATH; {INSTALL_HINT}")
    return path


@functools.lru_cache(maxsize=8)
def _encoders(exe: str) -> str:
    try:
        res = subprocess.run([exe, "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=60)
    except OSError as exc:
        raise CodecUnavailable(f"codec hevc: cannot run {exe} ({exc.strerror}); {INSTALL_HINT}") from None
    return res.stdout


def _ffmpeg_python():
    try:
        import ffmpeg  # the ffmpeg-python package
    except ImportError:
        ffmpeg = None
    if ffmpeg is None or not hasattr(ffmpeg, "input"):
        raise CodecUnavailable("codec hevc: the Python package ffmpeg-python is missing; pip install ffmpeg-python")
    return ffmpeg


def _run(stream, exe: str, data: bytes, what: str) -> bytes:
    ffmpeg = _ffmpeg_python()
    try:
        out, _ = stream.global_args("-hide_banner", "-nostdin", "-loglevel", "error").run(
            cmd=exe, input=data, capture_stdout=True, capture_stderr=True)
    except ffmpeg.Error as exc:
        tail = (exc.stderr or b"").decode("utf-8", "replace").strip().splitlines()[-3:]
        raise VolbenchError(f"codec hevc: ffmpeg failed to {what}: {' | '.join(tail) or 'no message'}") from None
    return out


def _run_into(stream, exe: str, data: bytes, nbytes: int, what: str) -> tuple[np.ndarray, int, int]:
    """Run ffmpeg with `data` on stdin, reading stdout straight into a preallocated buffer.

    Returns (buffer of `nbytes` uint8, bytes received into it, whether ffmpeg wrote more than
    that: it is then stopped, and the rest is never held in memory). The
    decoder's output size is known from the header, so this skips subprocess.communicate's
    chunk list and join (one full copy of the volume) and reads through a 1 MiB pipe.
    """
    proc = stream.global_args("-hide_banner", "-nostdin", "-loglevel", "error").run_async(
        cmd=exe, pipe_stdin=True, pipe_stdout=True, pipe_stderr=True)
    with contextlib.suppress(ImportError, AttributeError, OSError):  # Linux only; 64 KiB works too
        import fcntl

        fcntl.fcntl(proc.stdout.fileno(), fcntl.F_SETPIPE_SZ, 1 << 20)
    err: list[bytes] = []

    def feed():
        with contextlib.suppress(BrokenPipeError, OSError):  # ffmpeg exits early on bad input
            proc.stdin.write(data)
        with contextlib.suppress(BrokenPipeError, OSError):
            proc.stdin.close()

    helpers = [threading.Thread(target=feed, daemon=True),
               threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True)]
    for t in helpers:
        t.start()
    buf = np.empty(nbytes, np.uint8)
    view = memoryview(buf)
    got = 0
    extra = 0
    try:
        while got < nbytes:
            n = proc.stdout.readinto(view[got:])
            if not n:
                break
            got += n
        if proc.stdout.read(1):  # output beyond the header's frames: not held, ffmpeg stopped
            extra = 1
            proc.kill()
    except BaseException:
        proc.kill()  # do not leave ffmpeg blocked on a pipe nobody reads
        raise
    finally:
        rc = proc.wait()
        for t in helpers:
            t.join()
        proc.stdout.close()
        proc.stderr.close()
    if rc != 0 and not extra:
        tail = b"".join(err).decode("utf-8", "replace").strip().splitlines()[-3:]
        raise VolbenchError(f"codec hevc: ffmpeg failed to {what}: {' | '.join(tail) or f'exit status {rc}'}")
    return buf, got, extra


# -- sample mapping --------------------------------------------------------------------------
def _by_table(values: np.ndarray, fn) -> np.ndarray:
    """``fn(values)`` elementwise; for 8/16-bit integers through a table of all 2**bits inputs.

    The table holds fn of every possible input value, so the result is identical to applying
    fn to the array, at the cost of one gather instead of several float64 passes.
    """
    if values.dtype.kind in "ui" and values.dtype.itemsize <= 2 and values.size > 65536:
        bits = 8 * values.dtype.itemsize
        unsigned = np.dtype(f"u{values.dtype.itemsize}")
        inputs = np.arange(1 << bits, dtype=np.int64).astype(unsigned).view(values.dtype)
        table = fn(inputs)
        return table[values.view(unsigned)]
    return fn(values)


def to_12bit(volume: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """Map an integer volume into 0..4095 (uint16); return it and the inverse's parameters."""
    vmin = int(volume.min()) if volume.size else 0
    vmax = int(volume.max()) if volume.size else 0
    if vmin >= 0 and vmax <= MAX_HIGH:
        return volume.astype(np.uint16, copy=False), {"kind": "identity", "min": 0, "scale": 1.0, "exact": True}
    if vmax - vmin <= MAX_HIGH:
        mapped = _by_table(volume, lambda v: (v.astype(np.int64) - vmin).astype(np.uint16))
        return mapped, {"kind": "offset", "min": vmin, "scale": 1.0, "exact": True}
    scale = (vmax - vmin) / MAX_HIGH

    def fwd(v):
        m = np.rint((v.astype(np.float64) - vmin) / scale)
        return np.clip(m, 0, MAX_HIGH).astype(np.uint16)

    return _by_table(volume, fwd), {"kind": "scale", "min": vmin, "scale": scale, "exact": False}


def from_12bit(mapped: np.ndarray, t: dict[str, Any], dtype: np.dtype) -> np.ndarray:
    """Invert to_12bit: ``v = round(m * scale + min)`` clipped to the dtype (``mapped`` is uint16)."""
    dtype = np.dtype(dtype)
    lim = np.iinfo(dtype)
    if t["kind"] == "identity":
        return mapped.astype(dtype, copy=False)
    if t["kind"] == "offset":
        return _by_table(mapped, lambda m: np.clip(m.astype(np.int64) + int(t["min"]), lim.min, lim.max).astype(dtype))
    if t["kind"] == "scale":
        scale, vmin = float(t["scale"]), float(t["min"])
        return _by_table(mapped, lambda m: np.clip(np.rint(m.astype(np.float64) * scale + vmin),
                                                    lim.min, lim.max).astype(dtype))
    raise CorruptFile(f"codec hevc: unknown sample transform {t['kind']!r} in header")


def _padded(n: int, minimum: int) -> int:
    return max(minimum, -(-n // ALIGN) * ALIGN)


#: the fewest bytes a coded picture takes in an Annex-B stream (start code and NAL unit header)
MIN_FRAME_BYTES = 5


def _checked_header(header: dict[str, Any], payload: bytes, shape: tuple[int, int, int],
                    dtype: np.dtype) -> tuple[int, int, int, str]:
    """(frame height, width, bits, pixel format) of a codec header, checked against the volume's
    shape and dtype and the payload's length before anything is allocated; CorruptFile otherwise."""
    nz, ny, nx = shape

    def bad(what):
        return CorruptFile(f"codec hevc: {what}; {REENCODE}")

    try:
        hy, wx = (int(s) for s in header["frame_size"])
        bits, pix_fmt = int(header["bits"]), header["pix_fmt"]
    except (KeyError, TypeError, ValueError):
        raise bad("header lacks a valid frame_size, bits or pix_fmt") from None
    if (bits, pix_fmt) not in ((8, "gray"), (BITS_HIGH, "gray12le")):
        raise bad(f"unexpected bits {bits} / pixel format {pix_fmt!r} in header")
    if dtype.kind not in "ui" or (bits == 8) != (dtype == np.uint8):
        raise bad(f"{bits}-bit frames cannot hold a {dtype.name} volume (uint8: 8-bit, other integers: 12-bit)")
    if not (ny <= hy <= _padded(ny, MIN_HEIGHT) and nx <= wx <= _padded(nx, MIN_WIDTH)):
        raise bad(f"frame_size {hy}x{wx} does not fit slices of {ny}x{nx} (padded to at most "
                  f"{_padded(ny, MIN_HEIGHT)}x{_padded(nx, MIN_WIDTH)})")
    if header.get("pad", [hy - ny, wx - nx]) != [hy - ny, wx - nx] or header.get("frames", nz) != nz:
        raise bad(f"pad {header.get('pad')} / frames {header.get('frames')} disagree with frame_size {hy}x{wx} "
                  f"and shape {list(shape)}")
    if len(payload) < MIN_FRAME_BYTES * nz:
        raise bad(f"payload of {len(payload)} bytes cannot hold {nz} coded frames")
    t = header.get("transform")
    if bits == 8:
        if t is not None:
            raise bad("8-bit frames with a sample transform")
    else:
        try:
            kind, scale, vmin = t["kind"], float(t["scale"]), t["min"]
        except (KeyError, TypeError, ValueError):
            raise bad("12-bit frames without a valid sample transform") from None
        if (kind not in ("identity", "offset", "scale") or not (math.isfinite(scale) and scale > 0)
                or isinstance(vmin, bool) or not isinstance(vmin, (int, float)) or not math.isfinite(vmin)):
            raise bad(f"invalid sample transform {t!r}")
    return hy, wx, bits, pix_fmt


class HEVC(Codec):
    name = "hevc"
    lossless = False
    display_name = "HEVC (x265)"
    family = "video"
    table_order = 10
    rate_knob = "crf"
    rate_knob_range = (0.0, 51.0)
    rate_knob_integer = False
    rate_knob_increases_size = False
    rate_knob_log = False
    defaults = {"crf": 28.0, "preset": "medium", "intra": False, "lossless": False, "x265_params": ""}

    def check_params(self) -> None:
        p = self.params
        try:
            crf = float(p["crf"])
        except (TypeError, ValueError):
            raise VolbenchError(f"codec hevc: crf must be a number, got {p['crf']!r}") from None
        if not CRF_MIN_HIGH <= crf <= 51:
            raise VolbenchError(f"codec hevc: crf {crf} outside {CRF_MIN_HIGH}..51")
        if p["preset"] not in PRESETS:
            raise VolbenchError(f"codec hevc: preset {p['preset']!r} unknown; one of {list(PRESETS)}")
        for key in ("intra", "lossless"):
            if not isinstance(p[key], bool):
                raise VolbenchError(f"codec hevc: {key} must be true or false, got {p[key]!r}")
        xp = p["x265_params"]
        if not isinstance(xp, str) or any(c in xp for c in " \n\t'\""):
            raise VolbenchError(f"codec hevc: x265_params must be a 'key=value:key=value' string, got {xp!r}")

    # -- interface -----------------------------------------------------------------------------
    def encode(self, volume: np.ndarray, info: VolumeInfo) -> Encoded:
        if volume.ndim != 3:
            raise VolbenchError(f"{info.name}: hevc needs a 3D volume (Z, Y, X), got shape {volume.shape}")
        if not np.issubdtype(volume.dtype, np.integer):
            raise VolbenchError(
                f"{info.name}: codec hevc codes integer volumes only, got {volume.dtype}; "
                "convert the dataset to uint8/uint16 first")
        p = self.params
        if volume.dtype == np.uint8:
            frames, bits, pix_fmt, transform = volume, 8, "gray", None
        else:
            frames, transform = to_12bit(volume)
            bits, pix_fmt = BITS_HIGH, "gray12le"
            if p["lossless"] and not transform["exact"]:
                log.warning("%s: value range %d..%d exceeds 12 bits; hevc lossless is not exact "
                            "(scale %.6g)", info.name, int(volume.min()), int(volume.max()), transform["scale"])
        crf = float(p["crf"])
        if bits == 8 and crf < 0 and not p["lossless"]:
            raise VolbenchError(f"{info.name}: hevc crf {crf} < 0 needs a 12-bit coding (non-uint8 volume); use 0..51")
        nz, ny, nx = volume.shape
        hy, wx = _padded(ny, MIN_HEIGHT), _padded(nx, MIN_WIDTH)
        if (hy, wx) != (ny, nx):
            frames = np.pad(frames, ((0, 0), (0, hy - ny), (0, wx - nx)), mode="edge")
        frames = np.ascontiguousarray(frames, dtype=np.uint8 if bits == 8 else "<u2")

        xp = ["log-level=error", "info=0", "frame-threads=1", f"pools={max(1, int(info.threads))}"]
        if not p["lossless"]:
            # through x265-params: ffmpeg's own -crf option refuses values below -1
            xp.append(f"crf={crf:g}")
        if p["intra"]:
            xp.append("keyint=1")
        if p["lossless"]:
            xp.append("lossless=1")
        if p["x265_params"]:
            xp.append(p["x265_params"])
        out_kw: dict[str, Any] = {"format": "hevc", "vcodec": "libx265", "preset": p["preset"],
                                  "x265-params": ":".join(xp)}
        exe = _ffmpeg_exe()
        ff = _ffmpeg_python()
        stream = ff.input("pipe:", format="rawvideo", pix_fmt=pix_fmt, s=f"{wx}x{hy}", framerate=FPS)
        payload = _run(stream.output("pipe:", **out_kw), exe, frames.tobytes(), f"encode {info.name}")
        if not payload:
            raise VolbenchError(f"codec hevc: ffmpeg produced no bitstream for {info.name}")
        header = {"format": "hevc-annexb", "bits": bits, "pix_fmt": pix_fmt, "frames": nz,
                  "frame_size": [hy, wx], "pad": [hy - ny, wx - nx], "transform": transform}
        return Encoded(header=header, payload=payload)

    @classmethod
    def decode(cls, header: dict[str, Any], payload: bytes, shape: tuple[int, ...], dtype: np.dtype,
               device: str = "auto") -> np.ndarray:
        nz, ny, nx = (int(s) for s in shape)
        hy, wx, bits, pix_fmt = _checked_header(header, payload, (nz, ny, nx), np.dtype(dtype))
        exe = _ffmpeg_exe()
        ff = _ffmpeg_python()
        # passthrough: one output frame per coded frame, whatever the (meaningless) timestamps
        stream = ff.input("pipe:", format="hevc").output("pipe:", format="rawvideo", pix_fmt=pix_fmt,
                                                         vsync="passthrough")
        item = 1 if bits == 8 else 2
        frame_bytes = hy * wx * item
        raw, got, extra = _run_into(stream, exe, payload, nz * frame_bytes, "decode the hevc payload")
        if got < nz * frame_bytes:
            raise CorruptFile(f"codec hevc: decoder returned {got // frame_bytes} frames of {hy}x{wx}, "
                              f"expected {nz}; {REENCODE}")
        if extra:  # more or larger pictures than the header says: not this file's stream
            raise CorruptFile(f"codec hevc: the stream holds more than the header's {nz} frames of {hy}x{wx}; "
                              f"{REENCODE}")
        arr = raw.view(np.uint8 if bits == 8 else "<u2").reshape(nz, hy, wx)[:, :ny, :nx]
        if bits == 8:
            return np.ascontiguousarray(arr).astype(np.dtype(dtype), copy=False)  # our own buffer
        return from_12bit(np.ascontiguousarray(arr), header["transform"], dtype)

    def params_for_target(self, target_bpp: float, volume: np.ndarray, info: VolumeInfo,
                          tolerance: float = 0.05):
        # 12-bit coding reaches higher rates below CRF 0 (x265 allows down to -QpBdOffset)
        codec = type(self)(**self.params)
        if volume.dtype != np.uint8:
            codec.rate_knob_range = (float(CRF_MIN_HIGH), 51.0)
        return bisect_rate(codec, target_bpp, volume, info, tolerance)

    @classmethod
    def versions(cls) -> dict[str, str]:
        exe = _ffmpeg_exe()
        _encoders(exe)  # warm check_available's cache too: callers time decode after versions()
        return dict(_versions(exe))

    @classmethod
    def check_available(cls) -> None:
        _ffmpeg_python()
        exe = _ffmpeg_exe()
        if not re.search(r"^\s*V\S*\s+libx265\s", _encoders(exe), re.M):
            raise CodecUnavailable(f"codec hevc: {exe} has no libx265 encoder; {INSTALL_HINT}")


@functools.lru_cache(maxsize=8)
def _versions(exe: str) -> tuple[tuple[str, str], ...]:
    out: dict[str, str] = {}
    try:
        import importlib.metadata as md
        out["ffmpeg-python"] = md.version("ffmpeg-python")
    except Exception:  # noqa: BLE001 - version lookup only
        pass
    res = subprocess.run([exe, "-version"], capture_output=True, text=True, timeout=60)
    m = re.search(r"ffmpeg version (\S+)", res.stdout)
    out["ffmpeg"] = m.group(1) if m else "unknown"
    # x265 prints its version when it opens an encoder; encode one tiny frame to read it
    res = subprocess.run(
        [exe, "-hide_banner", "-nostdin", "-f", "rawvideo", "-pix_fmt", "gray", "-s", "64x64", "-i", "pipe:",
         "-c:v", "libx265", "-x265-params", "log-level=info", "-f", "hevc", "-"],
        input=bytes(64 * 64), capture_output=True, timeout=60)
    m = re.search(rb"HEVC encoder version (\S+)", res.stderr)
    out["x265"] = m.group(1).decode() if m else "unknown"
    return tuple(sorted(out.items()))
