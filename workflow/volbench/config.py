"""Checks of the config beyond its JSON schema, and names derived from it."""

from __future__ import annotations

import re

from .errors import VolbenchError

SAFE = re.compile(r"^[A-Za-z0-9_-]+$")
SAFE_POINT = re.compile(r"^[A-Za-z0-9._-]+$")


def point_label(rp: dict) -> str:
    """The folder name of a rate point: its `label`, else key-value pairs, e.g. crf-28."""
    if rp.get("label"):
        label = str(rp["label"])
    else:
        parts = []
        for k in sorted(rp):
            v = rp[k]
            if isinstance(v, float) and v == int(v) and abs(v) < 1e15:
                v = int(v)
            parts.append(f"{k}-{v}")
        label = "_".join(parts) or "default"
    label = re.sub(r"[^A-Za-z0-9._-]", "", label.replace(" ", ""))
    if not SAFE_POINT.match(label) or label.startswith("."):
        raise VolbenchError(f"rate point {rp}: cannot make a safe folder name; give it a `label:` of letters, digits, . _ -")
    return label


def schema_error(err) -> str:
    """One line for a config that fails the JSON schema (a jsonschema ValidationError): the key,
    e.g. ``datasets.d.spacing``, and what is wrong. Where a choice between alternatives fails
    (oneOf / anyOf), jsonschema's message lists the alternatives; the schema's description of the
    choice says what to do instead, e.g. "give exactly one of synthetic, path, url"."""
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path).lstrip(".")
    what = err.message
    if err.validator in ("oneOf", "anyOf") and isinstance(err.schema, dict) and err.schema.get("description"):
        what = err.schema["description"]
        keys = [k for alt in err.validator_value if isinstance(alt, dict) for k in alt.get("required", [])]
        if keys and isinstance(err.instance, dict):  # alternatives that name keys: say which are given
            what += f" (has {', '.join(k for k in keys if k in err.instance) or 'none'})"
    return f"config {where or '(top level)'}: {what}"


def check_sections(config: dict, configfiles=()) -> None:
    """A config names its own experiment: `datasets:` and `codecs:`. A file given with --configfile
    replaces the embedded default (config/config.yaml) instead of being merged into it, so a file
    without them is an error that says so, not a run of the default's datasets or codecs."""
    missing = [k for k in ("datasets", "codecs") if not config.get(k)]
    if not missing:
        return
    what = " and ".join(f"`{k}:`" for k in missing)
    if configfiles:
        names = ", ".join(str(f) for f in configfiles)
        raise VolbenchError(
            f"config {names}: no {what} section; a --configfile replaces the embedded default "
            "(config/config.yaml) and is not merged with it, so it needs its own datasets: and codecs: "
            "(copy them from config/config.yaml)")
    raise VolbenchError(f"config: no {what} section (--replace-workflow-config without --configfile drops the "
                        "embedded default); give a config file with --configfile")


def check_config(config: dict) -> None:
    """The checks beyond the JSON schema, which has run already (types, known keys, each dataset's
    one source): raise VolbenchError naming the offending key."""
    for name, entry in config.get("datasets", {}).items():
        if not SAFE.match(name):
            raise VolbenchError(f"datasets.{name}: dataset names may hold letters, digits, _ and - only")
        if "url" in entry:
            if "sha256" not in entry:
                raise VolbenchError(f"datasets.{name}: a url needs its sha256 (datasets.{name}.sha256)")
            url = str(entry["url"])
            if not (url.startswith("https://") or url.startswith("file://")
                    or (entry.get("allow_http") and url.startswith("http://"))):
                raise VolbenchError(f"datasets.{name}.url: {url} is not https; use https or set allow_http: true")
    for name, entry in config.get("codecs", {}).items():
        if not SAFE.match(name):
            raise VolbenchError(f"codecs.{name}: codec names may hold letters, digits, _ and - only")
        labels = [point_label(rp) for rp in entry.get("rate_points", [])]
        dup = sorted({lab for lab in labels if labels.count(lab) > 1})
        if dup:
            raise VolbenchError(f"codecs.{name}.rate_points: duplicate rate points {dup}; give them distinct `label:`s")
        from .codecs.base import get_codec

        kind = entry.get("codec", name)
        cls = get_codec(kind, entry.get("module"))  # unknown codec type: fail before any job runs
        base = dict(entry.get("params") or {})
        for i, rp in enumerate(entry.get("rate_points", [])):
            knobs = {k: v for k, v in rp.items() if k not in ("label", "target_bpp")}
            if "target_bpp" in rp and cls.rate_knob is None and not _instance_has_knob(cls, {**base, **knobs}):
                raise VolbenchError(f"codecs.{name}.rate_points[{i}]: codec {kind} has no rate knob, "
                                    "so target_bpp cannot be used; give the codec's own parameters")
            try:
                cls(**{**base, **knobs})  # unknown or invalid parameters: fail before any job runs
            except VolbenchError as exc:
                raise VolbenchError(f"codecs.{name}.rate_points[{i}]: {exc}") from None


def _instance_has_knob(cls, params) -> bool:
    """Whether target_bpp works: a rate knob (some codecs set it per instance, e.g. from a mode
    parameter) or the codec's own solution (an overridden params_for_target)."""
    from .codecs.base import Codec

    if cls.params_for_target is not Codec.params_for_target:
        return True
    try:
        return cls(**params).rate_knob is not None
    except VolbenchError:
        return True  # the parameter error itself is reported by the caller


def codec_gpu(entry: dict, name: str, device: str) -> int:
    """1 when the codec's jobs use a GPU (so Snakemake runs them one at a time per GPU)."""
    if "gpu" in entry:
        return int(bool(entry["gpu"]))
    if device == "cpu":
        return 0
    from .codecs.base import get_codec

    cls = get_codec(entry.get("codec", name), entry.get("module"))
    if not cls.uses_gpu:
        return 0
    if device.startswith("cuda"):
        return 1
    try:  # device auto: a GPU job only where one is present
        import torch

        return int(torch.cuda.is_available())
    except ImportError:
        return 0
