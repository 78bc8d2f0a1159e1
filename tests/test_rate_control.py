"""target_bpp rate control (base.bisect_rate) through the full encode path: hevc, jpeg2000, zfp."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from volbench.codecs.base import VolumeInfo, decode_bytes, encode_volume
from volbench.errors import VolbenchError

INFO = VolumeInfo(name="synthetic", threads=1)


def synthetic(shape, dtype=np.uint16, lo=0, hi=4000, seed=0, noise=0.01):
    """Smooth Gaussian blobs plus a little noise, scaled to lo..hi."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(0, 1, n) for n in shape], indexing="ij")
    f = np.zeros(shape)
    for _ in range(6):
        c = rng.uniform(0, 1, 3)
        s = rng.uniform(0.1, 0.35)
        f += rng.uniform(0.3, 1) * np.exp(-((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) / (2 * s * s))
    f += noise * rng.standard_normal(shape)
    f = (f - f.min()) / (f.max() - f.min())
    return np.rint(lo + f * (hi - lo)).astype(dtype)


@pytest.mark.parametrize("kind,params,dtype,hi,target", [
    ("hevc", {"preset": "ultrafast"}, np.uint16, 4000, 1.0),
    ("hevc", {"preset": "ultrafast"}, np.uint16, 4000, 4.0),   # needs CRF < 0 (12-bit range)
    ("hevc", {"preset": "ultrafast", "intra": True}, np.uint8, 255, 0.5),
    ("jpeg2000", {}, np.uint16, 4000, 1.0),
    ("jpeg2000", {}, np.uint16, 60000, 0.25),
    ("jpeg2000", {}, np.uint8, 255, 2.0),
    # the same bisection drives zfp, whose knob depends on its mode (accuracy mode's tolerance acts in
    # powers of two, so its files come in steps too coarse for 5%: not asserted here)
    ("zfp", {"mode": "rate"}, np.uint16, 4000, 3.0),
])
def test_target_bpp_hit(kind, params, dtype, hi, target):
    vol = synthetic((8, 48, 64), dtype, hi=hi, noise=0.02)
    data, record = encode_volume(kind, {**params, "target_bpp": target}, vol, INFO)
    rc = record["rate_control"]
    assert rc["hit"], rc
    assert abs(rc["realised_bpp"] - target) <= 0.05 * target, rc
    # the realised rate is the size of the container file, every byte counted
    assert rc["realised_bpp"] == pytest.approx(8.0 * len(data) / vol.size, rel=1e-12)
    assert record["bytes"] == len(data)
    assert record["params"][rc["knob"]] == rc["knob_value"]
    out, _ = decode_bytes(data)
    assert out.shape == vol.shape and out.dtype == vol.dtype


def test_unreachable_target_gives_closest_with_warning(caplog):
    vol = synthetic((3, 32, 32), np.uint8, hi=255)
    with caplog.at_level(logging.WARNING, logger="volbench.codecs"):
        data, record = encode_volume("jpeg2000", {"target_bpp": 0.001}, vol, INFO)
    rc = record["rate_control"]
    assert not rc["hit"]
    # the closest file is the smallest one jpeg2000 can make (ratio at the end of its range)
    smallest = encode_volume("jpeg2000", {"ratio": 1000.0}, vol, INFO)[0]
    assert len(data) == len(smallest)
    assert rc["realised_bpp"] == pytest.approx(8.0 * len(data) / vol.size, rel=1e-12)
    assert any("not reachable" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("kind,params,target,end", [
    ("jpeg2000", {}, 0.001, 1000.0),              # below the smallest file: the largest ratio
    ("zfp", {"mode": "rate"}, 200.0, 32.0),        # above the largest: the highest fixed rate
    ("hevc", {"preset": "ultrafast"}, 100.0, -24.0),  # the case: 100 bpv, 2.6 reached
])
def test_target_outside_the_knob_range_stops_after_the_ends(kind, params, target, end, caplog):
    """Issue 22, item 5: the ends of the range are encoded first; a target outside the rates they
    give stops there (two encodes, not a full bisection), with the closer end and one warning."""
    vol = synthetic((4, 32, 64), np.uint16, hi=4000)
    with caplog.at_level(logging.WARNING, logger="volbench.codecs"):
        data, record = encode_volume(kind, {**params, "target_bpp": target}, vol, INFO)
    rc = record["rate_control"]
    assert not rc["hit"] and rc["trials"] == 2 and rc["knob_value"] == end, rc
    lo, hi = rc["reachable_bpp"]
    assert not lo <= target <= hi and rc["realised_bpp"] in (lo, hi)
    assert rc["realised_bpp"] == pytest.approx(8.0 * len(data) / vol.size, rel=1e-12)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "not reachable: outside" in warned[0] and "target_missed" in warned[0]


def test_target_missed_is_a_summary_column_and_in_summary_md():
    import pandas as pd

    from volbench import summary

    assert "target_missed" in summary.COLUMNS and "target_missed" in summary._MD
    df = pd.DataFrame([{"dataset": "d", "codec": "hevc", "point": "target_bpp-100", "status": "ok", "bpv": 2.6,
                        "target_bpp": 100.0, "knob": "crf", "knob_value": -24.0, "target_missed": True},
                       {"dataset": "d", "codec": "hevc", "point": "crf-28", "status": "ok", "bpv": 0.4}])
    md = summary.markdown(df)
    assert md.splitlines()[0].endswith("| status | target_missed |")
    assert "Missed targets" in md and "- d / hevc / target_bpp-100: target 100 bpv, realised 2.6 bpv at crf=-24" in md


def test_codec_without_knob_refuses_target():
    vol = synthetic((2, 16, 16), np.uint8, hi=255)
    with pytest.raises(VolbenchError, match="no rate knob"):
        encode_volume("zstd", {"target_bpp": 1.0}, vol, INFO)
