"""Content-addressed copies on the device: each local input (a file, a directory, a data manifest with the
media it references) becomes an :class:`Item` named by the sha256 of its contents, stored on the device at
``~/.cache/mmdeploy_kit/remote/<sha256>/<name>``. A second run finds it there and copies nothing.

Transfer is one ``tar`` stream over ``ssh`` (``tar -x`` on the device, which every Jetson has), extracted into a
staging folder and renamed into place, so an interrupted copy never leaves a half-written item behind. Works the
same against OpenSSH's sshd and any server that runs commands (no scp/sftp subsystem needed).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..artifacts import sha256_file
from ..errors import DataError

CACHE_REL = ".cache/mmdeploy_kit/remote"     # under the remote $HOME
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".onnx", ".pt2", ".ts", ".engine", ".plan", ".h5")


@dataclass
class Item:
    """``name`` is the top-level file or folder name on the device; ``files`` maps paths relative to the item
    root (``name/...``) to a local file, or to bytes generated here (a rewritten manifest)."""

    name: str
    files: dict[str, Path | bytes] = field(default_factory=dict)
    is_dir: bool = True
    local: str = ""                                 # what the user passed, for reports
    _sha: Optional[str] = None

    @property
    def sha256(self) -> str:
        if self._sha is None:
            h = hashlib.sha256()
            h.update(f"mmdk-remote-item-v1\0{self.name}\0{int(self.is_dir)}\n".encode())
            for rel in sorted(self.files):
                src = self.files[rel]
                digest = hashlib.sha256(src).hexdigest() if isinstance(src, bytes) else sha256_file(src)
                h.update(f"{rel}\0{digest}\n".encode())
            self._sha = h.hexdigest()
        return self._sha

    @property
    def size(self) -> int:
        return sum(len(s) if isinstance(s, bytes) else s.stat().st_size for s in self.files.values())

    def remote_path(self, cache_dir: str) -> str:
        return f"{cache_dir}/{self.sha256}/{self.name}"


def file_item(path: Path, local: str = "") -> Item:
    return Item(name=path.name, files={path.name: path}, is_dir=False, local=local or str(path))


def dir_item(path: Path, local: str = "", skip_weights: bool = False) -> Item:
    files: dict[str, Path | bytes] = {}
    for p in sorted(path.rglob("*")):
        if p.is_file() and not (skip_weights and p.suffix.lower() in WEIGHT_SUFFIXES):
            files[f"{path.name}/{p.relative_to(path).as_posix()}"] = p
    return Item(name=path.name, files=files, is_dir=True, local=local or str(path))


def path_item(path: Path, local: str = "") -> Item:
    return dir_item(path, local) if path.is_dir() else file_item(path, local)


def manifest_item(manifest: Path) -> tuple[Item, str]:
    """A data manifest + every image/audio it references (+ ``classes.json`` beside it), laid out as locally
    relative to the manifest; media outside its folder are copied under ``_ext/`` and the manifest rewritten.
    Returns the item and the manifest's path inside it. The manifest is validated here first."""
    from ..data.manifest import CLASSES_FILE, MEDIA_KEYS, load_manifest

    load_manifest(manifest)  # one-line DataError before any remote work
    base = manifest.resolve().parent
    root = base.name or "data"
    files: dict[str, Path | bytes] = {}
    out_lines: list[str] = []
    rewritten = False
    for raw in manifest.read_text(encoding="utf-8").splitlines():
        if not raw.strip():
            continue
        row = json.loads(raw)
        for key in MEDIA_KEYS:
            value = row.get(key)
            if not value:
                continue
            p = Path(value).expanduser()
            src = (p if p.is_absolute() else base / p).resolve()
            try:
                rel = src.relative_to(base).as_posix()
            except ValueError:
                rel = f"_ext/{hashlib.sha256(str(src).encode()).hexdigest()[:12]}_{src.name}"
                row[key] = rel
                rewritten = True
            files[f"{root}/{rel}"] = src
        out_lines.append(json.dumps(row, ensure_ascii=False))
    if rewritten:
        files[f"{root}/{manifest.name}"] = ("\n".join(out_lines) + "\n").encode()
    else:
        files[f"{root}/{manifest.name}"] = manifest.resolve()
    classes = base / CLASSES_FILE
    if classes.is_file():
        files[f"{root}/{CLASSES_FILE}"] = classes
    for rel, src in files.items():
        if isinstance(src, Path) and not src.is_file():
            raise DataError(f"{src} (referenced by {manifest}) does not exist")
    return Item(name=root, files=files, is_dir=True, local=str(manifest)), f"{root}/{manifest.name}"


def write_tar(items: list[Item], fileobj: io.BufferedIOBase) -> None:
    """Stream ``<sha256>/<rel>`` entries of every item (no compression: checkpoints do not compress)."""
    with tarfile.open(fileobj=fileobj, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for item in items:
            for rel in sorted(item.files):
                src = item.files[rel]
                arc = f"{item.sha256}/{rel}"
                if isinstance(src, bytes):
                    info = tarfile.TarInfo(arc)
                    info.size = len(src)
                    info.mode = 0o644
                    tar.addfile(info, io.BytesIO(src))
                else:
                    info = tar.gettarinfo(str(src), arcname=arc)
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    with open(src, "rb") as fh:
                        tar.addfile(info, fh)


def upload_script(cache_dir: str, shas: list[str], staging: str) -> str:
    """Remote shell: extract the tar on stdin into a staging folder, then rename each item into place."""
    names = " ".join(shas)
    return (f'set -e; C="{cache_dir}"; S="$C/{staging}"; mkdir -p "$S"; '
            f'trap \'rm -rf "$S"\' EXIT; tar -xf - -C "$S"; '
            f'for h in {names}; do if [ -d "$C/$h" ]; then rm -rf "$S/$h"; else mv "$S/$h" "$C/$h"; fi; done')


def human_mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def free_bytes_from_df(line: str) -> Optional[int]:
    """``df -Pk`` data line -> available bytes."""
    parts = line.split()
    try:
        return int(parts[3]) * 1024
    except (IndexError, ValueError):
        return None

