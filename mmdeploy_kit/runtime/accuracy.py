"""Task accuracy on a JSONL manifest, for the reference and every artifact on the same preprocessed samples.

- dual encoders (an image, audio or video tower + an all-text tower): zero-shot top-1/top-5 with prompts
  built from the labels (templates averaged, as CLIP does) and media->text / text->media recall@1/5/10, for
  every pairing of one model's media tower with another's text tower (cross-backend pairs included).
  Figures: ``zero_shot_top1`` / ``zero_shot_top5`` for every modality (the report's ``modality`` says which),
  recall as ``i2t_R@k`` / ``t2i_R@k`` (image), ``a2t_R@k`` / ``t2a_R@k`` (audio), ``v2t_R@k`` / ``t2v_R@k`` (video);
- every tower: output drift vs the reference (cosine mean/min, max abs error);
- towers with a ``*logits*`` output: top-1 agreement with the reference, and accuracy when labels exist.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from ..data.manifest import Sample, class_names, label_indices
from ..errors import DataError
from ..model.iospec import IOSpec
from .backends.base import Backend
from .metrics import accuracy, drift, l2_normalize, recall_at_k, top1_agreement, zero_shot_topk
from .preprocess import image_feeds, load_image_reader, load_tokenizer, seq_length
from .preprocess_media import media_feeds, tower_medium
from .schema import AccuracyReport, ClassifierResult, DriftResult, PairResult

DEFAULT_TEMPLATE = "a photo of a {label}."
# prompt template used instead of DEFAULT_TEMPLATE when the dual encoder's media tower is not an image tower
MODALITY_TEMPLATES = {"audio": "the sound of a {label}.", "video": "a video of a {label}."}
RECALL_PREFIX = {"image": "i", "audio": "a", "video": "v"}  # i2t_R@1 / a2t_R@1 / v2t_R@1 and t2i / t2a / t2v
MAX_EVAL_BATCH = 32


@dataclass
class Contestant:
    label: str
    backends: dict[str, Backend]            # tower name -> loaded backend


def tower_roles(specs: dict[str, IOSpec]) -> tuple[Optional[str], Optional[str]]:
    """(media tower, text tower) of a dual encoder - image-text, else audio- or video-text - or (None, None)."""
    media, text, _ = dual_roles(specs)
    return media, text


def dual_roles(specs: dict[str, IOSpec]) -> tuple[Optional[str], Optional[str], Optional[str]]:
    """(media tower, text tower, modality) of a dual encoder: image-text first, else audio- or video-text."""
    image = [n for n, s in specs.items() if s.modalities == ["image"]]
    text_towers = [n for n, s in specs.items() if s.modalities == ["text"]]
    if len(image) == 1 and len(text_towers) == 1:
        return image[0], text_towers[0], "image"
    for kind in ("audio", "video"):
        media = [n for n, s in specs.items() if tower_medium(s) == kind]
        if len(media) == 1 and len(text_towers) == 1:
            return media[0], text_towers[0], kind
    return None, None, None


def recall_keys(modality: str) -> tuple[str, str]:
    """Figure-name prefixes of media->text and text->media recall: ('i2t', 't2i') for images."""
    p = RECALL_PREFIX.get(modality, modality[:1])
    return f"{p}2t", f"t2{p}"


def eval_batch_size(specs: Sequence[IOSpec]) -> int:
    size = MAX_EVAL_BATCH
    for spec in specs:
        first = spec.inputs[0].shape[0] if spec.inputs[0].shape else 1
        size = min(size, first if isinstance(first, int) else spec.dims[first][1])
    return max(1, size)


def run_batched(backend: Backend, feeds: dict[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
    """Run ``feeds`` (all with the same leading dim) in chunks of ``batch``; the last chunk is padded."""
    n = len(next(iter(feeds.values())))
    outs: dict[str, list[np.ndarray]] = {}
    for start in range(0, n, batch):
        chunk = {k: v[start:start + batch] for k, v in feeds.items()}
        m = len(next(iter(chunk.values())))
        if m < batch and _static_batch(backend.tower.spec):
            chunk = {k: np.concatenate([v, np.repeat(v[-1:], batch - m, axis=0)]) for k, v in chunk.items()}
        for name, arr in backend.run(chunk).items():
            outs.setdefault(name, []).append(np.asarray(arr)[:m])
    return {k: np.concatenate(v) for k, v in outs.items()}


def _static_batch(spec: IOSpec) -> bool:
    return bool(spec.inputs[0].shape) and isinstance(spec.inputs[0].shape[0], int)


class _Inputs:
    """Preprocessed arrays shared by every contestant (so all see identical inputs)."""

    def __init__(self, samples: Sequence[Sample], proc_dir: Optional[Path], templates: Sequence[str]):
        self.samples = list(samples)
        self.proc_dir = proc_dir
        self.templates = list(templates)
        self.image_rows = [i for i, s in enumerate(samples) if s.image is not None]
        self.text_rows = [i for i, s in enumerate(samples) if s.text]
        self.paired_rows = [i for i in self.image_rows if samples[i].text]
        self.modality = "image"
        self._media: dict[str, dict[str, np.ndarray]] = {}
        labeled = [s for s in samples if s.label is not None]
        self.classes = class_names(self.samples) if labeled else []
        self.labels = label_indices(self.samples, self.classes) if labeled and len(labeled) == len(samples) else None
        self._images: dict[str, np.ndarray] = {}
        self._tokens: dict[tuple[str, int], dict[str, np.ndarray]] = {}
        self._tokenizer = None

    def images(self, spec: IOSpec, name: str) -> np.ndarray:
        if name not in self._images:
            reader = load_image_reader(self.proc_dir, spec, name)
            self._images[name] = reader([self.samples[i].image for i in self.image_rows])
        return self._images[name]

    def image_feeds(self, spec: IOSpec) -> dict[str, np.ndarray]:
        """Every image input of an image tower on the image rows (one ``pixel_values``, or SigLIP2's three)."""
        if len(spec.inputs) == 1:
            return {spec.inputs[0].name: self.images(spec, spec.inputs[0].name)}
        key = "image:" + ",".join(spec.input_names)
        if key not in self._media:
            self._media[key] = image_feeds(self.proc_dir, spec)([self.samples[i].image for i in self.image_rows])
        return self._media[key]

    def use_modality(self, modality: str) -> None:
        """Make ``modality`` (image / audio / video) the media side of the dual pair: rows and pairing."""
        self.modality = modality
        if modality != "image":
            self.image_rows = [i for i, s in enumerate(self.samples) if getattr(s, modality) is not None]
            self.paired_rows = [i for i in self.image_rows if self.samples[i].text]

    def media(self, spec: IOSpec) -> dict[str, np.ndarray]:
        """Feeds of an audio / video tower on the media rows (every input of the tower, by name)."""
        key = ",".join(spec.input_names)
        if key not in self._media:
            fn = media_feeds(self.modality, self.proc_dir, spec)
            self._media[key] = fn([getattr(self.samples[i], self.modality) for i in self.image_rows])
        return self._media[key]

    def tokens(self, kind: str, spec: IOSpec) -> dict[str, np.ndarray]:
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.proc_dir)
        length = min(seq_length(spec) or 77, getattr(self._tokenizer, "model_max_length", 77))
        key = (kind, length)
        if key not in self._tokens:
            if kind == "captions":
                texts = [self.samples[i].text for i in self.text_rows]
            else:
                texts = [t.format(label=c) for c in self.classes for t in self.templates]
            self._tokens[key] = self._tokenizer(texts, length)
        return self._tokens[key]

    def text_feeds(self, kind: str, spec: IOSpec) -> dict[str, np.ndarray]:
        toks = self.tokens(kind, spec)
        feeds = {}
        for i in spec.inputs:
            if i.modality != "text":
                continue
            if i.name in toks:
                feeds[i.name] = toks[i.name]
            elif "type_ids" in i.name:
                feeds[i.name] = np.zeros_like(toks["input_ids"])
            else:
                raise DataError(f"cannot build text input {i.name!r} from the manifest's text",
                                hint="text towers take input_ids / attention_mask / token_type_ids")
        return feeds

    def row_feeds(self, spec: IOSpec, rows: Sequence[int]) -> dict[str, np.ndarray]:
        """Feeds for a multi-modal tower on ``rows`` (each row has every modality the tower takes)."""
        feeds: dict[str, np.ndarray] = {}
        media: dict[str, dict[str, np.ndarray]] = {}
        for i in spec.inputs:
            if i.modality in ("audio", "video"):
                if i.modality not in media:  # every input of that modality at once (CLAP: features + is_longer)
                    sub = IOSpec(inputs=tuple(x for x in spec.inputs if x.modality == i.modality),
                                 outputs=spec.outputs, dims=spec.dims)
                    paths = [getattr(self.samples[r], i.modality) for r in rows]
                    media[i.modality] = media_feeds(i.modality, self.proc_dir, sub)(paths)
                feeds[i.name] = media[i.modality][i.name]
            elif i.modality == "image":
                pos = {r: k for k, r in enumerate(self.image_rows)}
                sub = IOSpec(inputs=tuple(x for x in spec.inputs if x.modality == "image"), outputs=spec.outputs,
                             dims=spec.dims)
                feeds[i.name] = self.image_feeds(sub)[i.name][[pos[r] for r in rows]]
            elif i.modality == "text":
                pos = {r: k for k, r in enumerate(self.text_rows)}
                toks = self.text_feeds("captions", spec)
                feeds[i.name] = toks[i.name][[pos[r] for r in rows]]
            else:
                raise DataError(f"cannot build {i.modality} input {i.name!r} from a manifest",
                                hint="calibrate with an .npz of arrays named like the inputs; benchmark latency only "
                                     "(omit --data) for this model")
        return feeds


def evaluate(contestants: Sequence[Contestant], reference: str, samples: Sequence[Sample], data_path: str,
             proc_dir: Optional[Path], templates: Sequence[str] = (DEFAULT_TEMPLATE,),
             log: Optional[Callable[[str], None]] = None) -> AccuracyReport:
    """Accuracy of every contestant; ``reference`` is the label drift and agreement are measured against."""
    t0 = time.perf_counter()
    log = log or (lambda _m: None)
    by_label = {c.label: c for c in contestants}
    ref = by_label[reference]
    specs = {n: b.tower.spec for c in contestants for n, b in c.backends.items()}
    specs.update({n: b.tower.spec for n, b in ref.backends.items()})
    vision, text, modality = dual_roles(specs)
    if modality and modality != "image" and list(templates) == [DEFAULT_TEMPLATE]:
        templates = (MODALITY_TEMPLATES[modality],)  # "a photo of ..." does not describe a sound
    inp = _Inputs(samples, proc_dir, templates)
    if modality:
        inp.use_modality(modality)
    batch = eval_batch_size([b.tower.spec for c in contestants for b in c.backends.values()])
    report = AccuracyReport(data=data_path, n_samples=len(inp.samples),
                            n_images=len(inp.image_rows) if modality in (None, "image") else 0,
                            n_captions=len(inp.text_rows), n_classes=len(inp.classes),
                            templates=list(templates) if vision else [],
                            processor=str(proc_dir) if proc_dir else None, modality=modality,
                            n_media=len(inp.image_rows) if modality else 0)
    outputs: dict[tuple[str, str], dict[str, np.ndarray]] = {}  # (label, tower) -> outputs on eval rows
    prompts: dict[str, np.ndarray] = {}
    for c in contestants:
        for tname, backend in c.backends.items():
            spec = backend.tower.spec
            log(f"accuracy: {c.label} / {tname}")
            if tname == vision:
                if not inp.image_rows:
                    raise DataError(f"{data_path} has no rows with an '{modality}' for tower {tname!r}",
                                    hint=f"add '{modality}' fields to the manifest, or evaluate with another manifest")
                feeds = inp.image_feeds(spec) if modality == "image" else inp.media(spec)
                outputs[(c.label, tname)] = run_batched(backend, feeds, batch)
            elif tname == text:
                if not inp.text_rows:
                    raise DataError(f"{data_path} has no rows with a 'text' for tower {tname!r}")
                outputs[(c.label, tname)] = run_batched(backend, inp.text_feeds("captions", spec), batch)
                if inp.classes:
                    prompts[c.label] = _first(run_batched(backend, inp.text_feeds("prompts", spec), batch))
            else:
                rows = _rows_with(inp, spec)
                outputs[(c.label, tname)] = run_batched(backend, inp.row_feeds(spec, rows), batch)
    if vision and text:
        _pairs(report, contestants, vision, text, outputs, prompts, inp)
    _drift_and_classifiers(report, contestants, ref, outputs, inp, (vision, text))
    _primary(report, contestants, ref, vision, text)
    report.seconds = round(time.perf_counter() - t0, 3)
    return report


def _first(outs: dict[str, np.ndarray]) -> np.ndarray:
    return next(iter(outs.values()))


def _rows_with(inp: _Inputs, spec: IOSpec) -> list[int]:
    need = set(spec.modalities) - {"generic"}
    rows = [i for i, s in enumerate(inp.samples) if all(getattr(s, m, None) not in (None, "") for m in need)]
    if not rows:
        raise DataError(f"no manifest row has every input this tower needs ({', '.join(sorted(need))})")
    return rows


def _pairs(report: AccuracyReport, contestants: Sequence[Contestant], vision: str, text: str,
           outputs: dict, prompts: dict, inp: _Inputs) -> None:
    img_pos = {r: k for k, r in enumerate(inp.image_rows)}
    txt_pos = {r: k for k, r in enumerate(inp.text_rows)}
    for cv in contestants:
        if (cv.label, vision) not in outputs:
            continue
        img = _first(outputs[(cv.label, vision)])
        for ct in contestants:
            if (ct.label, text) not in outputs:
                continue
            pair = PairResult(vision=cv.label, text=ct.label, cross=cv.label != ct.label, modality=inp.modality)
            if inp.labels is not None and ct.label in prompts:  # prompts exist only when classes do
                pe = l2_normalize(prompts[ct.label]).reshape(len(inp.classes), len(inp.templates), -1).mean(axis=1)
                zs = zero_shot_topk(img, pe, inp.labels[inp.image_rows], ks=(1, 5))
                pair.zero_shot_top1, pair.zero_shot_top5 = zs["top1"], zs["top5"]
            if inp.paired_rows:
                cap = _first(outputs[(ct.label, text)])[[txt_pos[r] for r in inp.paired_rows]]
                im = img[[img_pos[r] for r in inp.paired_rows]]
                pair.image_to_text = recall_at_k(im, cap)
                pair.text_to_image = recall_at_k(cap, im)
            report.pairs.append(pair)


def _drift_and_classifiers(report: AccuracyReport, contestants: Sequence[Contestant], ref: Contestant,
                           outputs: dict, inp: _Inputs, roles: tuple) -> None:
    for c in contestants:
        for tname in c.backends:
            outs = outputs[(c.label, tname)]
            ref_outs = outputs.get((ref.label, tname))
            rows = inp.image_rows if tname == roles[0] else inp.text_rows if tname == roles[1] else \
                _rows_with(inp, c.backends[tname].tower.spec)
            for oname, arr in outs.items():
                is_logits = "logit" in oname.lower() and arr.ndim == 2 and arr.shape[1] > 1
                agreement = None
                if c.label != ref.label and ref_outs is not None and oname in ref_outs:
                    r = ref_outs[oname]
                    if r.shape == arr.shape:
                        d = drift(r, arr)
                        agreement = top1_agreement(r, arr) if is_logits else None
                        report.drift.append(DriftResult(
                            artifact=c.label, tower=tname, output=oname, n=int(arr.shape[0]),
                            cosine_mean=d["cosine_mean"], cosine_min=d["cosine_min"],
                            max_abs_error=d["max_abs_error"] if d["finite"] else None, top1_agreement=agreement))
                if is_logits:
                    acc = None
                    if inp.labels is not None and arr.shape[1] == len(inp.classes):
                        acc = accuracy(arr, inp.labels[rows])
                    report.classifiers.append(ClassifierResult(artifact=c.label, tower=tname, output=oname,
                                                               accuracy=acc, top1_agreement=agreement))


def _primary(report: AccuracyReport, contestants: Sequence[Contestant], ref: Contestant, vision: Optional[str],
             text: Optional[str]) -> None:
    """Headline metrics per contestant: its own dual pair (missing tower borrowed from the reference)."""
    for c in contestants:
        figures: dict[str, float] = {}
        if vision and text:
            v, t = _partner(c, ref, contestants, vision), _partner(c, ref, contestants, text)
            pair = next((p for p in report.pairs if p.vision == v and p.text == t), None)
            if pair is not None:
                to_text, from_text = recall_keys(pair.modality)
                if pair.zero_shot_top1 is not None:
                    figures["zero_shot_top1"] = pair.zero_shot_top1
                    figures["zero_shot_top5"] = pair.zero_shot_top5 or 0.0
                for k, val in pair.image_to_text.items():
                    figures[f"{to_text}_{k}"] = val
                for k, val in pair.text_to_image.items():
                    figures[f"{from_text}_{k}"] = val
        for cl in report.classifiers:
            if cl.artifact == c.label and cl.accuracy is not None:
                figures.setdefault("accuracy", cl.accuracy)
            if cl.artifact == c.label and cl.top1_agreement is not None:
                figures.setdefault("top1_agreement", cl.top1_agreement)
        cos = [d.cosine_mean for d in report.drift if d.artifact == c.label]
        if cos:
            figures["cosine_mean"] = float(min(cos))
        report.primary[c.label] = figures


def _partner(c: Contestant, ref: Contestant, contestants: Sequence[Contestant], tower: str) -> str:
    """Who provides ``tower`` for ``c``'s headline pair: itself, else the reference, else the first that has it."""
    for cand in (c, ref, *contestants):
        if tower in cand.backends:
            return cand.label
    return c.label


def headline_metric(figures: dict[str, float]) -> Optional[tuple[str, float]]:
    """The one number plots and summaries use: zero-shot top-1, else accuracy, else agreement."""
    for key in ("zero_shot_top1", "accuracy", "top1_agreement", "i2t_R@1", "a2t_R@1", "v2t_R@1"):
        if key in figures:
            return key, figures[key]
    return None


def gated_metrics(figures: dict[str, float]) -> list[str]:
    """Metrics the accuracy-drop gate checks (points of %, higher is better)."""
    recalls = [f"{d}_R@1" for m in RECALL_PREFIX for d in recall_keys(m)]
    return [k for k in ("zero_shot_top1", "zero_shot_top5", *recalls, "accuracy") if k in figures]
