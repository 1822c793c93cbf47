"""Content-addressed step cache: ``$MMDK_CACHE_DIR/steps/<key>/``.

A step's key is its whole identity: pass name + pass version + canonical config + sha256 of its input
artifacts + content hashes of every data file it reads (+ the reference model it compares with) + mmdk and
backend versions. A cached entry holds the step's output directory and ``mmdk_step.json`` (key, output
hash); an entry whose files no longer match that hash (truncated, edited) is treated as a miss and replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

from ..artifacts import default_cache_dir, package_versions, sha256_file

STEP_RECORD = "mmdk_step.json"
KEY_VERSIONS = ("torch", "transformers", "onnx", "onnxruntime", "onnxscript", "torch-pruning", "tensorrt",
                "neural-compressor")
_HASHES: dict[tuple[str, int, int], str] = {}


def content_hash(path: str | Path) -> str:
    """sha256 of a file, or of a directory's files (names + bytes); memoised per (path, size, mtime) so a
    run hashes each input once."""
    p = Path(path).resolve()
    files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
    stamp = (str(p), sum(f.stat().st_size for f in files), max((f.stat().st_mtime_ns for f in files), default=0))
    if stamp not in _HASHES:
        _HASHES[stamp] = sha256_file(p)
    return _HASHES[stamp]


def model_hash(model: Any) -> str:
    """Identity of a loaded model: its directory's content (HF dir, mmdk dir), else the files it came from and
    the source string (``file.py:factory`` names one of several factories); plus every tower's I/O spec
    (an ``--io`` file changes what is exported)."""
    src = Path(str(model.source))
    h = hashlib.sha256()
    if src.is_dir():
        h.update(content_hash(src).encode())
    else:
        h.update(str(model.source).split(":")[-1].encode() if ":" in str(model.source) else src.name.encode())
        for f in sorted({Path(f).resolve() for f in model.files if Path(f).exists()}):
            h.update(f.name.encode())
            h.update(content_hash(f).encode())
    specs = {name: (t.kind, t.precision, t.spec.to_dict()) for name, t in model.towers.items()}
    h.update(json.dumps(specs, sort_keys=True, default=str).encode())
    known = {Path(f).resolve() for f in model.files}
    for name, t in sorted(model.towers.items()):  # a tower file from elsewhere (a sub-step's scratch export)
        path = Path(t.path).resolve() if getattr(t, "path", None) else None
        if path is not None and path.exists() and path not in known and not (
                src.is_dir() and path.is_relative_to(src.resolve())):
            h.update(f"{name}:{content_hash(path)}".encode())
    return h.hexdigest()


def step_key(pass_cls: Any, config: Any, input_hash: str, data_hashes: dict[str, str],
             reference_hash: Optional[str] = None) -> str:
    from .. import __version__

    identity = {
        "pass": pass_cls.name, "pass_version": pass_cls.version, "config": json.loads(config.canonical_json()),
        "input": input_hash, "data": dict(sorted(data_hashes.items())), "reference": reference_hash,
        "mmdk": __version__, "machine": pass_cls.machine_identity(config),
        "versions": {k: v for k, v in package_versions(*KEY_VERSIONS).items() if k not in ("platform",)},
    }
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return f"{pass_cls.name}-{hashlib.sha256(text.encode()).hexdigest()[:24]}"


class StepCache:
    def __init__(self, root: Optional[Path] = None):
        self.root = Path(root) if root else default_cache_dir() / "steps"

    def entry(self, key: str) -> Path:
        return self.root / key

    def lookup(self, key: str) -> Optional[Path]:
        """The cached output directory for ``key``, or None (also when the entry is damaged)."""
        d = self.entry(key)
        rec = d / STEP_RECORD
        if not rec.is_file():
            return None
        try:
            record = json.loads(rec.read_text())
            out = d / "output"
            if record.get("key") != key or not out.is_dir() or sha256_file(out) != record.get("output_sha256"):
                return None
        except (OSError, ValueError):
            return None
        return out

    def store(self, key: str, output_dir: Path, info: dict[str, Any]) -> str:
        """Copy ``output_dir`` into the cache atomically; returns the output's content hash."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.tmp-", dir=self.root))
        try:
            copy_tree(output_dir, tmp / "output")
            digest = sha256_file(tmp / "output")
            (tmp / STEP_RECORD).write_text(json.dumps({"key": key, "output_sha256": digest, **info}, indent=2,
                                                      default=str) + "\n")
            final = self.entry(key)
            if final.exists():
                shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return digest

    def record(self, key: str) -> dict[str, Any]:
        try:
            return json.loads((self.entry(key) / STEP_RECORD).read_text())
        except (OSError, ValueError):
            return {}


def copy_tree(src: Path, dst: Path) -> None:
    """Copy a directory, hard-linking files where the file system allows (outputs are never modified)."""

    def link_or_copy(s: str, d: str) -> None:
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    shutil.copytree(src, dst, copy_function=link_or_copy)
