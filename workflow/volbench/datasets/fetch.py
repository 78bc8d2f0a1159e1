"""Downloads with retries and checksum verification, and archive extraction without path
traversal. The downloaded file is only moved into place once its SHA-256 matches."""

from __future__ import annotations

import hashlib
import shutil
import stat
import tarfile
import time
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from ..errors import VolbenchError
from ..io import atomic_write


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest: str | Path, sha256: str, dataset: str, retries: int = 4,
             allow_http: bool = False, timeout: float = 60.0) -> Path:
    dest = Path(dest)
    if not (url.startswith("https://") or url.startswith("file://") or (allow_http and url.startswith("http://"))):
        raise VolbenchError(f"dataset {dataset}: URL {url} is not https; use https or set `allow_http: true`")

    def fetch_into(tmp: Path) -> None:
        last = None
        for attempt in range(1, retries + 1):
            try:
                with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as out:
                    shutil.copyfileobj(resp, out, 1 << 20)
                break
            except Exception as exc:  # network errors: retry with backoff
                last = exc
                if attempt < retries:
                    time.sleep(min(2 ** attempt, 30))
        else:
            raise VolbenchError(f"dataset {dataset}: download of {url} failed after {retries} tries ({last}); "
                                "check the URL or download it by hand and use `path:`")
        got = sha256_of(tmp)
        if got != sha256.lower():
            raise VolbenchError(f"dataset {dataset}: checksum mismatch for {url}: expected sha256 {sha256}, got {got}; "
                                "the file changed upstream or the download was damaged: check the URL and `sha256:`")

    # atomic_write removes the temporary file when fetch_into raises
    return atomic_write(dest, fetch_into)


def _safe_target(root: Path, name: str, dataset: str) -> Path:
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts:
        raise VolbenchError(f"dataset {dataset}: archive member {name!r} would write outside its folder; refusing")
    target = (root / pure).resolve()
    if root.resolve() not in target.parents and target != root.resolve():
        raise VolbenchError(f"dataset {dataset}: archive member {name!r} would write outside its folder; refusing")
    return target


def extract_member(archive: str | Path, member: str, dest_dir: str | Path, dataset: str) -> Path:
    """Extract one member (a file or a folder prefix, e.g. a .zarr) of a zip/tar archive."""
    archive, dest_dir = Path(archive), Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    prefix = member.rstrip("/")
    found = False
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                target = _safe_target(dest_dir, info.filename, dataset)
                if info.filename.rstrip("/") == prefix or info.filename.startswith(prefix + "/"):
                    # a symlink entry (Unix mode in the high bits) would be written as a file holding
                    # the link's text; refused as tar links are
                    kind = stat.S_IFMT(info.external_attr >> 16)
                    if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
                        raise VolbenchError(f"dataset {dataset}: archive member {info.filename!r} is a link or "
                                            "device; refusing")
                    found = True
                    if info.is_dir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src, open(target, "wb") as out:
                        shutil.copyfileobj(src, out)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            for ti in tf.getmembers():
                target = _safe_target(dest_dir, ti.name, dataset)
                if not (ti.name.rstrip("/") == prefix or ti.name.startswith(prefix + "/")):
                    continue
                if ti.issym() or ti.islnk() or ti.isdev():
                    raise VolbenchError(f"dataset {dataset}: archive member {ti.name!r} is a link or device; refusing")
                found = True
                if ti.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tf.extractfile(ti)
                with src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
    else:
        raise VolbenchError(f"dataset {dataset}: {archive.name} is not a zip or tar archive, but `member:` is set")
    if not found:
        raise VolbenchError(f"dataset {dataset}: archive {archive.name} has no member {member!r}; fix `member:`")
    return _safe_target(dest_dir, prefix, dataset)
