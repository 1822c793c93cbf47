"""Calibration data for quantization: real samples named like each tower's inputs, never random.

``--calib-data`` is one of

- a JSONL manifest (``image`` / ``text`` / ``audio`` / ``video`` fields, see :mod:`.manifest`): images go
  through the checkpoint's own image processor, text through its own tokenizer, padded to one fixed length
  (the longest text in the set, capped by the tower's sequence limit) so histogram calibrators see
  equal-shape batches; audio clips through its feature extractor (resampled to its sampling rate), video
  frames through its image processor (:mod:`..runtime.preprocess_media`);
- an ``.npz`` file whose arrays are named like the tower inputs (``input_ids``) or ``tower/input``
  (``text/input_ids``) when two towers share an input name; first axis = samples;
- a folder of ``<input>.npy`` files (or ``<tower>/<input>.npy`` sub-folders), same naming.

Rows are shuffled with a fixed seed and split into a calibration part (ranges / sensitivity) and a
held-out part (verification and accuracy budgets). Torch-free; ONNX Runtime is imported only by
:func:`calibration_reader`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..errors import DataError
from ..model.iospec import NUMPY_DTYPES, IOSpec
from .manifest import Sample, load_manifest

TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
MIN_ROWS = 2


@dataclass
class TowerData:
    """One tower's calibration batches (equal shapes) and held-out batches, plus where they came from."""

    tower: str
    calib: list[dict[str, np.ndarray]]
    holdout: list[dict[str, np.ndarray]]
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def n_calib(self) -> int:
        return sum(_rows(b) for b in self.calib)

    @property
    def n_holdout(self) -> int:
        return sum(_rows(b) for b in self.holdout)


def _rows(batch: dict[str, np.ndarray]) -> int:
    return int(len(next(iter(batch.values()))))


@dataclass
class CalibrationSet:
    """Per-tower data plus, for manifests, the held-out rows (task metrics: zero-shot, recall, accuracy)."""

    towers: dict[str, TowerData]
    source: str
    holdout_samples: Optional[list[Sample]] = None


# ---- entry point ---------------------------------------------------------------------------------------
def load_calibration(data: str | Path, specs: dict[str, IOSpec], processor_dir: Optional[Path] = None,
                     n_calib: int = 128, n_holdout: int = 64, batch_size: int = 8,
                     seed: int = 0) -> CalibrationSet:
    """Per tower (name -> IOSpec): calibration and held-out batches built from ``data``."""
    path = Path(data).expanduser()
    if n_calib < 1 or n_holdout < 1 or batch_size < 1:
        raise DataError("calibration sample counts and batch size must be >= 1")
    if not path.exists():
        raise DataError(f"calibration data {path} does not exist",
                        hint="pass a JSONL manifest, an .npz file or a folder of .npy files with --calib-data")
    if path.suffix == ".jsonl" or (path.is_file() and path.suffix not in (".npz", ".npy")):
        return _from_manifest(path, specs, processor_dir, n_calib, n_holdout, batch_size, seed)
    arrays = _read_arrays(path)
    towers = {}
    for name, spec in specs.items():
        matched = _match_arrays(arrays, name, spec, path, len(specs) > 1)
        total = len(next(iter(matched.values())))
        n_c, n_h = _counts(f"for tower {name!r}", total, n_calib, n_holdout)
        order = np.random.default_rng(seed).permutation(total)
        hold = {k: v[order[:n_h]] for k, v in matched.items()}
        calib = {k: v[order[n_h:n_h + n_c]] for k, v in matched.items()}
        towers[name] = _batches(name, calib, hold, batch_size,
                                {"source": str(path), "format": "npz" if path.is_file() else "npy folder",
                                 "n_available": int(total), "seed": seed})
    return CalibrationSet(towers, str(path))


def _counts(what: str, total: int, n_calib: int, n_holdout: int) -> tuple[int, int]:
    """(calibration, held-out) row counts out of ``total``; ``what`` names the data in the error."""
    if total < MIN_ROWS:
        raise DataError(f"calibration data {what} has {total} sample(s); need at least {MIN_ROWS}",
                        hint="one part calibrates, the other verifies; give more samples")
    if total >= n_calib + n_holdout:
        return n_calib, n_holdout
    n_h = min(n_holdout, max(1, total // 4))  # too few rows for both: keep ~1/4 for verification
    return min(n_calib, total - n_h), n_h


def _batches(tower: str, calib: dict[str, np.ndarray], hold: dict[str, np.ndarray], batch_size: int,
             details: dict[str, Any]) -> TowerData:
    n_c = len(next(iter(calib.values())))
    n_h = len(next(iter(hold.values())))
    if n_c < 1 or n_h < 1:
        raise DataError(f"calibration data for tower {tower!r} leaves {n_c} calibration and {n_h} held-out "
                        "sample(s); need at least one of each", hint="give more samples with --calib-data")
    b = min(batch_size, n_c)
    n_c -= n_c % b  # equal-shape batches: histogram calibrators stack them
    batches = [{k: v[i:i + b] for k, v in calib.items()} for i in range(0, n_c, b)]
    holdout = [{k: v[i:i + batch_size] for k, v in hold.items()} for i in range(0, n_h, batch_size)]
    shapes = {k: list(v.shape[1:]) for k, v in calib.items()}
    return TowerData(tower, batches, holdout, {**details, "n_calib": int(n_c), "n_holdout": int(n_h),
                                               "batch_size": int(b), "sample_shapes": shapes})


# ---- arrays (.npz / .npy folder) --------------------------------------------------------------------
def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    if path.is_file() and path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: np.asarray(z[k]) for k in z.files}
        except (ValueError, OSError) as exc:
            raise DataError(f"{path} is not a readable .npz file ({str(exc).splitlines()[0][:120]})") from None
    if path.is_file() and path.suffix == ".npy":
        raise DataError(f"{path} is a single array; its input name is unknown",
                        hint="put <input_name>.npy files in a folder, or use an .npz with named arrays")
    arrays: dict[str, np.ndarray] = {}
    for f in sorted(path.rglob("*.npy")):
        key = f.relative_to(path).with_suffix("").as_posix()
        try:
            arrays[key] = np.load(f, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise DataError(f"{f} is not a readable .npy file ({str(exc).splitlines()[0][:120]})") from None
    if not arrays:
        raise DataError(f"{path} holds no .npy files", hint="name them like the tower inputs, e.g. pixel_values.npy")
    return arrays


def _match_arrays(arrays: dict[str, np.ndarray], tower: str, spec: IOSpec, path: Path,
                  multi: bool) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    missing = []
    for inp in spec.inputs:
        arr = arrays.get(f"{tower}/{inp.name}")
        if arr is None:
            arr = arrays.get(inp.name)
        if arr is None:
            missing.append(inp.name)
            continue
        out[inp.name] = _conform(arr, inp, tower, path)
    if missing:
        have = ", ".join(sorted(arrays)) or "(none)"
        want = ", ".join(f"{tower}/{m}" if multi else m for m in missing)
        raise DataError(f"calibration data {path} does not match tower {tower!r}: no array for input(s) "
                        f"{', '.join(missing)} (it has {have})",
                        hint=f"name the arrays like the tower inputs: {want}")
    counts = {k: len(v) for k, v in out.items()}
    if len(set(counts.values())) > 1:
        raise DataError(f"calibration arrays for tower {tower!r} have different sample counts {counts}")
    return out


def _conform(arr: np.ndarray, inp: Any, tower: str, path: Path) -> np.ndarray:
    if arr.ndim != len(inp.shape):
        raise DataError(f"{path}: array for {tower}/{inp.name} has shape {list(arr.shape)}, but the input is "
                        f"{list(inp.shape)} (first axis = samples)", hint="save one sample per row along axis 0")
    for k, (got, want) in enumerate(zip(arr.shape, inp.shape)):
        if isinstance(want, int) and got != want:
            raise DataError(f"{path}: array for {tower}/{inp.name} has size {got} on axis {k}, the input needs {want}",
                            hint=f"the input's shape is {list(inp.shape)}")
    dtype = NUMPY_DTYPES[inp.dtype]
    if np.issubdtype(dtype, np.integer) and not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"{path}: array for {tower}/{inp.name} is {arr.dtype}, the input takes {inp.dtype}",
                        hint="save token ids / masks as integers")
    if not np.issubdtype(dtype, np.integer) and np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise DataError(f"{path}: array for {tower}/{inp.name} contains NaN or Inf")
    return np.ascontiguousarray(arr.astype(dtype, copy=False))


# ---- JSONL manifests -------------------------------------------------------------------------------------
def _needs(spec: IOSpec, tower: str) -> str:
    """'image', 'text', 'audio' or 'video': the manifest field a tower's inputs are built from."""
    from ..runtime.preprocess_media import tower_medium

    mods = set(spec.modalities)
    if mods == {"image"} and (len(spec.inputs) == 1 or "spatial_shapes" in spec.input_names):  # NaFlex: 3 inputs
        return "image"
    if mods == {"text"} and all(i.name in TEXT_INPUTS for i in spec.inputs):
        return "text"
    medium = tower_medium(spec)
    if medium in ("audio", "video"):
        return medium
    media = mods - {"generic"}
    if len(media) > 1 and media <= {"image", "text", "audio", "video"}:  # a fusion tower: rows with every field
        return "+".join(sorted(media))
    names = ", ".join(f"{i.name} ({i.modality})" for i in spec.inputs)
    raise DataError(f"cannot build calibration inputs for tower {tower!r} ({names}) from a JSONL manifest",
                    hint="pass --calib-data as an .npz (or folder of .npy) with arrays named like the inputs")


def _from_manifest(path: Path, specs: dict[str, IOSpec], processor_dir: Optional[Path], n_calib: int,
                   n_holdout: int, batch_size: int, seed: int) -> CalibrationSet:
    samples = load_manifest(path)
    n_c, n_h = _counts(f"in {path.name}", len(samples), n_calib, n_holdout)
    order = np.random.default_rng(seed).permutation(len(samples))
    hold_rows = [samples[i] for i in order[:n_h]]
    calib_rows = [samples[i] for i in order[n_h:n_h + n_c]]
    towers: dict[str, TowerData] = {}
    for tower, spec in specs.items():
        field_name = _needs(spec, tower)
        def has(s: Sample) -> bool:
            return all(getattr(s, f) for f in field_name.split("+"))
        if not any(has(s) for s in samples):
            present = sorted({k for s in samples for k in ("image", "text", "audio", "video") if getattr(s, k)})
            raise DataError(f"calibration data {path} does not match tower {tower!r}: it needs '{field_name}' "
                            f"fields, the manifest has only {', '.join(present) or 'none'}",
                            hint=f"add '{field_name}' to the manifest rows, or quantize only the towers it "
                                 "covers with --tower")
        c_rows, h_rows = [s for s in calib_rows if has(s)], [s for s in hold_rows if has(s)]
        encode = {"image": _images, "text": _texts, "audio": _media, "video": _media}.get(field_name, _fusion)
        both, details = encode(c_rows + h_rows, spec, processor_dir)
        calib = {k: v[:len(c_rows)] for k, v in both.items()}
        hold = {k: v[len(c_rows):] for k, v in both.items()}
        towers[tower] = _batches(tower, calib, hold, batch_size,
                                 {**details, "source": str(path), "format": "jsonl",
                                  "n_available": sum(1 for s in samples if has(s)), "seed": seed})
    return CalibrationSet(towers, str(path), holdout_samples=hold_rows)


def _images(rows: Sequence[Sample], spec: IOSpec, processor_dir: Optional[Path]):
    from ..runtime.preprocess import image_feeds

    feeds = image_feeds(processor_dir, spec)([s.image for s in rows])
    how = "image processor from " + str(processor_dir) if processor_dir is not None and \
        (processor_dir / "preprocessor_config.json").is_file() else "resize + CLIP mean/std (no image processor found)"
    return {k: np.ascontiguousarray(v) for k, v in feeds.items()}, {"preprocessing": how}


def _media(rows: Sequence[Sample], spec: IOSpec, processor_dir: Optional[Path]):
    from ..runtime.preprocess_media import describe, media_feeds, tower_medium

    kind = str(tower_medium(spec))
    fn = media_feeds(kind, processor_dir, spec)
    return fn([getattr(s, kind) for s in rows]), {"preprocessing": describe(kind, processor_dir, fn)}


def _fusion(rows: Sequence[Sample], spec: IOSpec, processor_dir: Optional[Path]):
    """A tower taking several modalities at once: each row's fields through the same readers as the evaluator."""
    from ..runtime.accuracy import _Inputs

    feeds = _Inputs(rows, processor_dir, templates=()).row_feeds(spec, list(range(len(rows))))
    feeds = {i.name: np.ascontiguousarray(feeds[i.name].astype(NUMPY_DTYPES[i.dtype], copy=False))
             for i in spec.inputs}
    return feeds, {"preprocessing": f"fusion rows ({', '.join(spec.modalities)}) with the processor files in "
                                    f"{processor_dir}"}


def _texts(rows: Sequence[Sample], spec: IOSpec, processor_dir: Optional[Path]):
    from ..runtime.preprocess import load_tokenizer, seq_length

    cap = seq_length(spec, default=128) or 128
    tok = load_tokenizer(processor_dir)
    texts = [s.text for s in rows]
    probe = tok(texts, cap)  # padded to cap; the longest real row sets the fixed length
    lengths = probe["attention_mask"].sum(axis=1)
    length = int(max(1, min(cap, lengths.max())))
    enc = tok(texts, length)
    feeds: dict[str, np.ndarray] = {}
    for inp in spec.inputs:
        if inp.name in enc:
            feeds[inp.name] = enc[inp.name].astype(NUMPY_DTYPES[inp.dtype])
        else:  # token_type_ids
            feeds[inp.name] = np.zeros_like(enc["input_ids"], dtype=NUMPY_DTYPES[inp.dtype])
    return feeds, {"preprocessing": f"tokenizer from {processor_dir}", "seq_len": length}


# ---- ONNX Runtime adaptor ----------------------------------------------------------------------------
def calibration_reader(batches: Sequence[dict[str, np.ndarray]], input_names: Optional[Sequence[str]] = None) -> Any:
    """An ``onnxruntime.quantization.CalibrationDataReader`` over ``batches`` (supports strided ranges)."""
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = [{k: v for k, v in b.items() if input_names is None or k in input_names} for b in batches]
            self.start, self.end, self.pos = 0, len(self.batches), 0

        def __len__(self) -> int:
            return len(self.batches)

        def set_range(self, start_index: int, end_index: int) -> None:
            self.start, self.end, self.pos = start_index, min(end_index, len(self.batches)), start_index

        def get_next(self) -> Optional[dict[str, np.ndarray]]:
            if self.pos >= self.end:
                return None
            self.pos += 1
            return self.batches[self.pos - 1]

        def rewind(self) -> None:
            self.pos = self.start

    return _Reader()
