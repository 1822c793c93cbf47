"""Artifacts (files on disk + metadata), the manifest written next to every output, atomic output dirs.

Torch-free. Every command writes into a temporary sibling directory and renames it into place only
once everything succeeded, so a failure never leaves a half-written output behind.
"""

from __future__ import annotations

import contextlib
import functools
import datetime as _dt
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from .errors import UserInputError

MANIFEST_NAME = "mmdk_manifest.json"
MANIFEST_SCHEMA_VERSION = 1
ArtifactKind = Literal["torch", "onnx", "trt_engine", "ts", "pt2", "hf", "openvino"]


class Artifact(BaseModel):
    """One per-tower output file. ``path`` is relative to the manifest's directory."""

    model_config = ConfigDict(extra="forbid")

    kind: ArtifactKind
    tower: str
    path: str
    precision: str = "fp32"
    sha256: str = ""
    size_bytes: int = 0
    io_spec: dict[str, Any] = Field(default_factory=dict)
    verification: dict[str, Any] = Field(default_factory=dict)
    details: dict[str, Any] = Field(default_factory=dict)


class Manifest(BaseModel):
    """``mmdk_manifest.json``: what produced this directory, from what, with which versions and figures."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = MANIFEST_SCHEMA_VERSION
    mmdk_version: str = ""
    created: str = ""
    pass_name: str
    config: dict[str, Any] = Field(default_factory=dict)
    source: dict[str, Any] = Field(default_factory=dict)
    versions: dict[str, str] = Field(default_factory=dict)
    artifacts: list[Artifact] = Field(default_factory=list)
    metrics: dict[str, Any] = Field(default_factory=dict)
    history: list[dict[str, Any]] = Field(default_factory=list)  # earlier passes, oldest first

    def artifact(self, tower: str) -> Artifact:
        for a in self.artifacts:
            if a.tower == tower:
                return a
        raise UserInputError(f"no tower {tower!r} in manifest; towers are {[a.tower for a in self.artifacts]}")

    def write(self, directory: Path) -> Path:
        from . import __version__

        self.mmdk_version = self.mmdk_version or __version__
        self.created = self.created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        path = Path(directory) / MANIFEST_NAME
        path.write_text(self.model_dump_json(indent=2) + "\n")
        return path

    @classmethod
    def read(cls, directory: str | Path) -> "Manifest":
        path = Path(directory)
        if path.is_dir():
            path = path / MANIFEST_NAME
        try:
            return cls.model_validate_json(path.read_text())
        except FileNotFoundError:
            raise UserInputError(f"{path} does not exist", hint="point at a directory written by an mmdk command") from None
        except ValueError as exc:
            raise UserInputError(f"{path} is not a valid mmdk manifest: {str(exc).splitlines()[0]}") from None


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    p = Path(path)
    files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
    for f in files:
        if p.is_dir():
            h.update(str(f.relative_to(p)).encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(chunk), b""):
                h.update(block)
    return h.hexdigest()


def size_on_disk(path: str | Path) -> int:
    p = Path(path)
    if p.is_dir():
        return sum(q.stat().st_size for q in p.rglob("*") if q.is_file())
    return p.stat().st_size if p.exists() else 0


def describe_file(directory: Path, rel: str) -> dict[str, Any]:
    """sha256 + size of a file (including ONNX external-data siblings named ``<file>.data``)."""
    p = Path(directory) / rel
    size = size_on_disk(p)
    ext = p.with_name(p.name + ".data")
    if ext.exists():
        size += ext.stat().st_size
    return {"sha256": sha256_file(p), "size_bytes": size}


def package_versions(*names: str) -> dict[str, str]:
    """Installed versions of the given distributions (plus python/platform), without importing them."""
    return dict(_package_versions(names))


@functools.lru_cache(maxsize=None)
def _package_versions(names: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """Memoised (metadata look-ups cost ~15 ms each; the pipeline asks several times per step)."""
    from importlib import metadata

    out = {"python": platform.python_version(), "platform": f"{sys.platform}-{platform.machine()}"}
    for n in names or ("torch", "transformers", "onnx", "onnxruntime", "onnxscript", "tensorrt"):
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            continue
    return tuple(out.items())


@contextlib.contextmanager
def atomic_output_dir(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temp dir next to ``out``; on success rename it to ``out``, on failure delete it.

    An existing non-empty ``out`` is refused unless ``overwrite`` (then it is replaced only after the
    new content is complete).
    """
    out = Path(out).resolve()
    if out.exists() and not out.is_dir():
        raise UserInputError(f"output {out} exists and is a file", hint="choose a directory path with -o")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserInputError(f"output directory {out} is not empty", hint="pass --overwrite or choose another -o")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_output_file(out: str | Path) -> Iterator[Path]:
    """Yield a temp path next to ``out``; rename it to ``out`` only if the block succeeds."""
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.tmp-", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, out)


def write_json_atomic(path: str | Path, data: Any) -> Path:
    with atomic_output_file(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return Path(path)


def default_cache_dir() -> Path:
    """``$MMDK_CACHE_DIR`` or ``~/.cache/mmdeploy_kit``."""
    env = os.environ.get("MMDK_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "mmdeploy_kit"


def relpath_or_abs(path: str | Path, base: Optional[Path] = None) -> str:
    p = Path(path).resolve()
    try:
        return str(p.relative_to((base or Path.cwd()).resolve()))
    except ValueError:
        return str(p)
