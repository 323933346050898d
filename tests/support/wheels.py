"""Wheels of the test environment's installed dependencies, with no network.

A release bundle holds every dependency wheel. Tests must not download, and
pip keeps no wheel files of what it installed, so this packs each installed
distribution sohoa needs (the closure of its requirements) back into a wheel
from its RECORD: the same files, the same dist-info, the same tags. ``sohoa
release build --wheels DIR`` then takes them from DIR with ``--no-index``.
"""

from __future__ import annotations

import base64
import hashlib
import re
import zipfile
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def _wanted(req: Requirement, extras: set[str]) -> bool:
    if req.marker is None:
        return True
    env = default_environment()
    return any(req.marker.evaluate({**env, "extra": e}) for e in ("", *extras))


def requirement_closure(root: str) -> list[metadata.Distribution]:
    """The installed distributions ``root`` needs (its extras left out), ``root`` excluded."""
    seen: dict[str, metadata.Distribution] = {}
    todo = [Requirement(r) for r in metadata.requires(root) or []]
    todo = [r for r in todo if _wanted(r, set())]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        dist = metadata.distribution(req.name)
        seen[name] = dist
        subs = (Requirement(s) for s in dist.requires or [])
        todo.extend(r for r in subs if _wanted(r, set(req.extras)))
    return sorted(seen.values(), key=lambda d: canonicalize_name(d.metadata["Name"]))


def _tag(dist: metadata.Distribution) -> str:
    wheel = dist.read_text("WHEEL") or ""
    tags = [line.split(":", 1)[1].strip() for line in wheel.splitlines() if line.startswith("Tag:")]
    if not tags:
        return "py3-none-any"
    # one file name may carry several tags: py2.py3-none-any, cp311-cp311-manylinux_x+manylinux_y
    parts = [t.split("-") for t in tags]
    return "-".join(".".join(dict.fromkeys(p[i] for p in parts)) for i in range(3))


def _record_line(arcname: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{arcname},sha256={digest},{len(data)}"


def repack(dist: metadata.Distribution, out: Path) -> Path:
    """``dist`` as a wheel file in ``out``, built from the files its RECORD lists."""
    name = re.sub(r"[-_.]+", "_", dist.metadata["Name"])
    target = out / f"{name}-{dist.version}-{_tag(dist)}.whl"
    base = Path(str(dist.locate_file("")))
    record_name = ""
    lines: list[str] = []
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for f in dist.files or []:
            arc = f.as_posix()
            if arc.endswith("/RECORD") and ".dist-info/" in arc:
                record_name = arc
                continue
            if arc.startswith("..") or "__pycache__" in arc or arc.endswith(".pyc"):
                continue  # scripts outside site-packages and byte code: pip makes its own
            path = base / f
            if not path.is_file():
                continue
            data = path.read_bytes()
            zf.writestr(arc, data)
            lines.append(_record_line(arc, data))
        lines.append(f"{record_name},,")
        zf.writestr(record_name, "\n".join(lines) + "\n")
    return target


def dependency_wheels(out: Path) -> list[Path]:
    """A wheel in ``out`` of every installed distribution sohoa requires."""
    out.mkdir(parents=True, exist_ok=True)
    return [repack(d, out) for d in requirement_closure("sohoa")]
