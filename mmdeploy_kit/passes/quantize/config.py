"""Quantization config (data only), accuracy budgets, and the per-tower plan resolved from both.

Budgets speak the benchmark harness's metrics::

    cosine>=0.99            mean per-sample cosine of every quantized tower's outputs vs FP32 (held-out data)
    text:cosine>=0.995      the same, one tower only
    cosine_min>=0.98        worst sample
    max_abs_error<=0.05     worst element
    zero_shot_top1_drop<=1  dual encoders, labelled manifest: points of top-1 lost vs FP32 (also _top5_)
    recall@1_drop<=2        dual encoders, captioned manifest: media->text and text->media R@1 (any k;
                            per direction: i2t_/t2i_ for images, a2t_/t2a_ audio, v2t_/t2v_ video)
    accuracy_drop<=1        towers with a logits output, labelled manifest
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal, Optional

from pydantic import Field, field_validator

from ...errors import UserInputError
from ...model.tower import LoadedModel, Tower
from ...runtime.verify import MIN_COSINE
from ..base import PassConfig

Precision = Literal["int8", "fp16", "fp32"]
Method = Literal["static", "dynamic", "hybrid", "auto"]  # hybrid: static image branch + dynamic text, one tower
TargetCpu = Literal["auto", "avx512_vnni", "avx2", "arm64"]
DEFAULT_AUTO_BUDGET = "cosine>=0.99"
DEFAULT_MIN_COSINE = MIN_COSINE["quantize"]  # the one tolerance table lives in runtime/verify.py
# numerically sensitive ops kept in FP32 by the FP16 conversion (ORT's own block-list is added to these)
FP16_BLOCK_OPS = ("LayerNormalization", "SimplifiedLayerNormalization", "SkipLayerNormalization",
                  "SkipSimplifiedLayerNormalization", "Softmax", "LogSoftmax", "ReduceMean", "ReduceSum",
                  "ReduceSumSquare", "ReduceMax", "ReduceMin", "ReduceL2", "ReduceLogSumExp", "ReduceProd",
                  "Pow", "Sqrt", "Reciprocal", "Exp", "Log", "CumSum", "TopK", "ArgMax", "ArgMin",
                  "InstanceNormalization", "GroupNormalization", "BatchNormalization", "Range")
TOWER_METRICS = {"cosine": ">=", "cosine_min": ">=", "max_abs_error": "<="}
_TASK_RE = re.compile(r"^(zero_shot_top[15]|recall@\d+|(?:[iav]2t|t2[iav])_R@\d+|accuracy)_drop$")
_BUDGET_RE = re.compile(r"^\s*(?:(?P<tower>[A-Za-z_][\w.-]*):)?(?P<metric>[A-Za-z0-9_@]+)\s*"
                        r"(?P<op>>=|<=)\s*(?P<value>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


@dataclass(frozen=True)
class Budget:
    """One accuracy constraint, e.g. ``cosine>=0.99`` (per tower) or ``zero_shot_top1_drop<=1`` (task)."""

    metric: str
    op: str
    value: float
    tower: Optional[str] = None

    @property
    def is_task(self) -> bool:
        return self.metric not in TOWER_METRICS

    @property
    def text(self) -> str:
        scope = f"{self.tower}:" if self.tower else ""
        return f"{scope}{self.metric}{self.op}{self.value:g}"

    def holds(self, figure: float) -> bool:
        return figure >= self.value if self.op == ">=" else figure <= self.value

    def slack(self, figure: float) -> float:
        """Positive when met; how far from the limit (in the metric's units)."""
        return figure - self.value if self.op == ">=" else self.value - figure


def parse_budget(text: str) -> Budget:
    m = _BUDGET_RE.match(text or "")
    hint = "e.g. 'cosine>=0.99', 'text:cosine>=0.995' or 'zero_shot_top1_drop<=1'"
    if not m:
        raise UserInputError(f"cannot parse accuracy budget {text!r}", hint=hint)
    metric, op, value = m["metric"], m["op"], float(m["value"])
    if metric in TOWER_METRICS:
        want = TOWER_METRICS[metric]
    elif _TASK_RE.match(metric):
        want = "<="
    else:
        raise UserInputError(f"unknown budget metric {metric!r}",
                             hint="use cosine, cosine_min, max_abs_error, zero_shot_top1_drop, zero_shot_top5_drop, "
                                  "recall@K_drop, i2t_R@K_drop, t2i_R@K_drop or accuracy_drop")
    if op != want:
        raise UserInputError(f"budget {text!r}: {metric} takes '{want}'", hint=hint)
    if metric.startswith("cosine") and not -1.0 <= value <= 1.0:
        raise UserInputError(f"budget {text!r}: a cosine lies in [-1, 1]", hint="e.g. 'cosine>=0.99'")
    if op == "<=" and value < 0:
        raise UserInputError(f"budget {text!r}: a drop or error bound must be >= 0")
    if m["tower"] and metric not in TOWER_METRICS:
        raise UserInputError(f"budget {text!r}: task metrics cover the whole model, not one tower",
                             hint=f"write it without the '{m['tower']}:' prefix")
    return Budget(metric=metric, op=op, value=value, tower=m["tower"])


class QuantizeConfig(PassConfig):
    """Everything ``mmdk quantize`` decides, as data (no data loaders, no callables)."""

    precision: Precision = "int8"
    method: Optional[Method] = None            # None: the preset decides per tower
    towers: tuple[str, ...] = ()               # towers to quantize; the others are copied unchanged
    tower_precision: tuple[tuple[str, Precision], ...] = ()
    tower_method: tuple[tuple[str, Method], ...] = ()
    preset: Literal["cpu", "tensorrt"] = "cpu"
    calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    percentile: float = Field(99.999, gt=50, le=100)
    per_channel: bool = True
    op_types: tuple[str, ...] = ()             # empty: the preset's default
    calib_samples: int = Field(128, ge=1)
    holdout_samples: int = Field(64, ge=1)
    batch_size: int = Field(8, ge=1)
    accuracy_budget: tuple[str, ...] = ()
    min_cosine: Optional[float] = Field(None, ge=-1, le=1)  # verification floor (default per precision)
    max_fp32_fraction: float = Field(0.5, gt=0, le=1)       # mixed precision may keep at most this share
    sensitivity: Literal["auto", "node", "layer"] = "auto"
    fp16_block_ops: tuple[str, ...] = FP16_BLOCK_OPS
    backend: Literal["ort", "inc", "nncf"] = "ort"   # nncf: OpenVINO IR (extra openvino), see quantize/nncf.py
    nncf_ignored_types: tuple[str, ...] = ()   # nncf: OpenVINO op types kept in float (e.g. MatMul)
    nncf_smooth_quant: Optional[bool] = None   # nncf: None = NNCF's default (on for transformers); False = off
    nncf_patch_matmul: bool = True             # nncf: a ViT patch-embedding Conv (stride = kernel) as MatMul
    templates: tuple[str, ...] = ("a photo of a {label}.",)
    seed: int = 0
    target_cpu: TargetCpu = "auto"             # the CPU the INT8 model will run on (auto: this machine); see isa.py
    reduce_range: Optional[bool] = None        # 7-bit weights; None: the preset's choice for target_cpu
    weight_type: Optional[Literal["int8", "uint8"]] = None  # None: the preset's choice for target_cpu
    calib_data: Optional[str] = None           # JSONL manifest, .npz or folder of .npy (a recipe data name)
    processor: Optional[str] = None            # HF dir with tokenizer / image processor (default: the model's)

    @field_validator("accuracy_budget")
    @classmethod
    def _budgets_parse(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for b in v:
            parse_budget(b)
        return v

    def budgets(self) -> list[Budget]:
        return [parse_budget(b) for b in self.accuracy_budget]

    def canonical_json(self) -> str:
        """The cache identity: ``target_cpu="auto"`` names the ISA it resolves to here, so an INT8 model
        quantized on an AVX-512 VNNI machine is not served from the cache on an AVX2 one (or back)."""
        import json

        from .isa import resolve_isa

        data = self.model_dump(mode="json")
        if data.get("target_cpu") == "auto":  # still a valid config: it round-trips to the same digest
            data["target_cpu"] = resolve_isa("auto")
        return json.dumps(data, sort_keys=True, separators=(",", ":"))


@dataclass
class TowerPlan:
    """What happens to one tower: resolved precision, method and quantizer options."""

    tower: str
    precision: Precision
    method: Optional[str] = None               # static | dynamic (None for fp16/fp32)
    auto: bool = False                         # accuracy-aware: search FP32 fallbacks against the budget
    alternatives: list[str] = field(default_factory=list)  # other methods 'auto' may try
    per_channel: bool = True
    symmetric_activations: bool = False
    matmul_const_b_only: bool = True
    quantize_bias: bool = True
    user_op_types: tuple[str, ...] = ()
    input_modalities: tuple[tuple[str, str], ...] = ()  # graph input -> modality (hybrid split)
    isa: str = ""                              # resolved target CPU (isa.py)
    reduce_range: bool = False                 # 7-bit weights (AVX2 without VNNI: no u8s8 saturation)
    weight_type: str = "int8"                  # int8 (U8S8) | uint8 (U8U8)
    note: str = ""                             # why the plan differs from what the preset would pick

    @property
    def op_types(self) -> tuple[str, ...]:
        return self.op_types_for(self.method) if self.method else ()

    def op_types_for(self, method: str) -> tuple[str, ...]:
        """--op-types, else MatMul/Gemm(/Conv for static: Conv dynamic -> ConvInteger, slow on CPU)."""
        if self.user_op_types:
            return self.user_op_types
        return ("MatMul", "Gemm") if method == "dynamic" else ("MatMul", "Gemm", "Conv")

    def describe(self) -> dict:
        d: dict = {"precision": self.precision}
        if self.precision == "int8":
            d.update(method=self.method, accuracy_aware=self.auto, op_types=list(self.op_types),
                     per_channel=self.per_channel, activation_type="int8" if self.symmetric_activations else "uint8",
                     weight_type=self.weight_type, symmetric_activations=self.symmetric_activations,
                     matmul_const_b_only=self.matmul_const_b_only, target_cpu=self.isa, reduce_range=self.reduce_range)
            if self.note:
                d["note"] = self.note
        return d


def is_text_tower(tower: Tower) -> bool:
    return any(i.dtype.startswith("int") for i in tower.spec.inputs) or "text" in tower.spec.modalities


def input_modalities(tower: Tower) -> dict[str, str]:
    """Input name -> modality; integer inputs (token ids, masks) count as text when the spec says generic."""
    return {i.name: ("text" if i.modality == "generic" and i.dtype.startswith("int") else i.modality)
            for i in tower.spec.inputs}


def is_fusion_tower(tower: Tower) -> bool:
    """Text inputs *and* float inputs of another modality (image / audio / video / ...) in one tower."""
    mods = input_modalities(tower)
    floats = [i for i in tower.spec.inputs if i.dtype.startswith(("float", "bfloat"))]
    return "text" in mods.values() and any(mods[i.name] != "text" for i in floats)


def resolve_plans(config: QuantizeConfig, model: LoadedModel) -> dict[str, TowerPlan]:
    """Per tower of ``model``: what to do. Unselected towers get precision fp32 (copied unchanged)."""
    selected = {t.name for t in model.select(config.towers)}
    for key, what in ((config.tower_precision, "--tower-precision"), (config.tower_method, "--tower-method")):
        for name, _ in key:
            model.tower(name)  # unknown tower -> UserInputError naming the towers
            if config.towers and name not in selected:
                raise UserInputError(f"{what} names tower {name!r}, which --tower does not select",
                                     hint="add it with --tower or drop the --tower filter")
    precisions = dict(config.tower_precision)
    methods = dict(config.tower_method)
    plans: dict[str, TowerPlan] = {}
    for name, tower in model.towers.items():
        precision = precisions.get(name, config.precision) if name in selected else "fp32"
        plan = TowerPlan(name, precision)
        if precision == "int8":
            _int8_plan(plan, config, tower, methods.get(name, config.method))
        elif name in methods:
            raise UserInputError(f"--tower-method {name}=... only applies to int8 towers ({name!r} is {precision})")
        plans[name] = plan
    return plans


def _int8_plan(plan: TowerPlan, config: QuantizeConfig, tower: Tower, method: Optional[str]) -> None:
    from .isa import cpu_int8_options

    text = is_text_tower(tower)
    fusion = is_fusion_tower(tower)
    preferred = "static" if config.preset == "tensorrt" else ("hybrid" if fusion else "dynamic" if text else "static")
    plan.auto = method == "auto" or bool(config.accuracy_budget)
    plan.input_modalities = tuple(input_modalities(tower).items())
    if method == "hybrid" and not fusion:
        raise UserInputError(f"--method hybrid needs a tower with text and image (or other float) inputs; "
                             f"{plan.tower!r} takes {', '.join(sorted(set(dict(plan.input_modalities).values())))}",
                             hint="use --method static or dynamic")
    if method in (None, "auto"):
        method = preferred
        if config.preset == "cpu" and plan.auto:
            plan.alternatives = [m for m in ("static", "dynamic") if m != method]
    if config.preset == "tensorrt" and method in ("dynamic", "hybrid"):
        raise UserInputError(f"--preset tensorrt writes QDQ graphs; {method} quantization cannot be used with it",
                             hint="use --method static (the default for --preset tensorrt)")
    plan.method = method
    plan.per_channel = config.per_channel
    plan.user_op_types = tuple(config.op_types)
    opts = cpu_int8_options(config.target_cpu, config.preset)
    plan.isa = opts["isa"]
    plan.reduce_range = opts["reduce_range"] if config.reduce_range is None else config.reduce_range
    plan.weight_type = opts["weight_type"] if config.weight_type is None else config.weight_type
    if config.preset == "tensorrt":
        plan.symmetric_activations, plan.matmul_const_b_only, plan.quantize_bias = True, False, False
        if not config.per_channel:
            raise UserInputError("--preset tensorrt needs per-channel weights", hint="drop --per-tensor")
