"""The benchmark report: typed (pydantic), versioned, and the source of truth for every rendering.

The JSON Schema of :class:`BenchReport` is committed as ``runtime/schemas/bench_report.v{N}.schema.json``
(regenerate with ``python -m mmdeploy_kit.runtime.schema``; a test keeps it in sync). Bump
``SCHEMA_VERSION`` on incompatible changes; readers refuse reports from a newer major version.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from .env import Environment
from .targets import TargetProfile

SCHEMA_NAME = "mmdk.bench.report"
SCHEMA_VERSION = 1
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
DEFAULT_CPU_CLOCK_PROCESSES = 3   # the CI mode (--clock cpu --threads 1) spreads its rounds over this many processes


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TimingConfig(_Model):
    """How long to measure. Timed runs continue until *both* ``min_runs`` and ``min_time_s`` are met
    for every artifact (and at least ``min_rounds`` interleaved rounds), or ``max_time_s`` per config.
    With ``processes`` > 1 each worker process takes its share of these (at least 3 rounds); ``precision``
    then adds processes (one process: rounds) until the speedup intervals are that narrow.
    The single source of the bench timing options: the CLI flags, the recipe bench step's fields (same names)
    and a remote bench's command line (``remote/bench.py``) map onto these fields."""

    warmup_runs: int = Field(5, ge=0)
    min_runs: int = Field(20, ge=1)
    min_time_s: float = Field(1.0, ge=0)
    min_rounds: int = Field(10, ge=1)
    clock: Literal["wall", "cpu"] = Field(
        "wall", description="what speedup ratios are computed from: wall-clock latency, or process CPU time "
                            "per run (immune to preemption on shared CPU machines; the ratio of compute work)")
    round_time_s: float = Field(0.05, gt=0)
    max_time_s: float = Field(60.0, gt=0)
    confidence: float = Field(0.95, gt=0, lt=1)
    bootstrap: int = Field(2000, ge=100)
    seed: int = 0
    telemetry_interval_ms: int = Field(100, ge=10, description="tegrastats sampling period (Jetson)")
    energy_window_s: float = Field(1.0, gt=0, description="Jetson: each artifact runs alone this long per shape "
                                                          "while tegrastats samples, for its energy per inference")
    processes: Optional[int] = Field(
        None, ge=1, description="fresh worker processes the interleaved rounds are spread over, one after another "
                                "(each loads the artifacts itself); speedup intervals then resample whole processes, so "
                                "they cover run-to-run variation. Default: 3 with clock=cpu (the CI mode), else 1")
    precision: Optional[float] = Field(
        None, gt=0, lt=1, description="adaptive length: keep adding rounds (one process) or processes until every "
                                      "speedup's interval is within +-precision of its ratio (0.03 = +-3%), or "
                                      "max_time_s per shape is spent")

    def worker_processes(self) -> int:
        """The number of worker processes to start with (``processes``, or the default for the clock)."""
        if self.processes is not None:
            return self.processes
        return DEFAULT_CPU_CLOCK_PROCESSES if self.clock == "cpu" else 1


class BenchConfig(_Model):
    target: str
    backend: str
    batches: list[int]
    seqs: Optional[list[int]] = None
    towers: list[str] = Field(default_factory=list)
    threads: Optional[int] = None
    data: Optional[str] = None
    data_limit: Optional[int] = None
    templates: list[str] = Field(default_factory=list)
    processor: Optional[str] = None
    reference: Optional[str] = None
    timing: TimingConfig = Field(default_factory=TimingConfig)


class LatencyStats(_Model):
    n: int
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    cv: float = Field(description="coefficient of variation, std / mean")
    throughput_items_per_s: float
    total_s: float


class Speedup(_Model):
    """``baseline time / artifact time`` (> 1: faster than the baseline) with a confidence interval."""

    baseline: str
    ratio: float
    ci_low: float
    ci_high: float
    confidence: float
    rounds: int
    clock: Literal["wall", "cpu"] = "wall"
    method: str = "median of per-round ratios of block medians; percentile bootstrap over rounds"
    processes: int = Field(1, description="worker processes the rounds were spread over (> 1: the interval "
                                          "resamples whole processes, covering between-process variation)")
    half_width_pct: Optional[float] = Field(None, description="precision reached: half the interval's width "
                                                              "relative to the ratio, in %")


class LatencyResult(_Model):
    artifact: str
    tower: str
    backend: str
    batch: int
    seq: Optional[int] = None
    sizes: dict[str, int]
    stats: LatencyStats
    cpu_stats: Optional[LatencyStats] = Field(None, description="process CPU time per run (CPU devices)")
    first_run_ms: float = Field(description="first inference at this shape, after load (cold)")
    warmup_runs: int
    rounds: int
    block_runs: int = Field(description="runs per artifact per interleaved round")
    processes: int = Field(1, description="worker processes the rounds were spread over")
    hit_max_time: bool = False
    peak_rss_bytes: Optional[int] = None
    peak_rss_delta_bytes: Optional[int] = Field(None, description="peak RSS during warm-up minus RSS before it")
    gpu_memory: dict[str, int] = Field(default_factory=dict)
    speedup: Optional[Speedup] = None


class TowerInfo(_Model):
    name: str
    kind: str
    precision: str
    backend: str
    device: str
    providers: list[str] = Field(default_factory=list)
    threads: Optional[int] = None
    inference_precision: Optional[str] = None  # what the runtime computes in (OpenVINO may run FP32 as BF16)
    session_seconds: float
    parameters: Optional[int] = None
    size_bytes: Optional[int] = None
    inputs: dict[str, list[Any]] = Field(default_factory=dict)


class ArtifactInfo(_Model):
    label: str
    source: str
    format: str
    role: Literal["reference", "artifact"]
    load_seconds: float
    size_on_disk_bytes: int
    rss_load_delta_bytes: Optional[int] = None
    towers: dict[str, TowerInfo]


class PairResult(_Model):
    """Dual-encoder task metrics with the media (image / audio / video) tower of ``vision`` and the text tower
    of ``text``; ``image_to_text`` / ``text_to_image`` hold media->text / text->media recall for any modality."""

    vision: str
    text: str
    cross: bool
    modality: str = "image"
    zero_shot_top1: Optional[float] = None
    zero_shot_top5: Optional[float] = None
    image_to_text: dict[str, float] = Field(default_factory=dict)
    text_to_image: dict[str, float] = Field(default_factory=dict)


class DriftResult(_Model):
    artifact: str
    tower: str
    output: str
    n: int
    cosine_mean: float
    cosine_min: float
    max_abs_error: Optional[float] = Field(None, description="None when the artifact produced NaN/Inf")
    top1_agreement: Optional[float] = None


class ClassifierResult(_Model):
    artifact: str
    tower: str
    output: str
    accuracy: Optional[float] = None
    top1_agreement: Optional[float] = None


class AccuracyReport(_Model):
    data: str
    n_samples: int
    n_images: int
    n_captions: int
    n_classes: int
    modality: Optional[str] = Field(None, description="media side of the dual pair: image, audio or video")
    n_media: int = 0
    templates: list[str] = Field(default_factory=list)
    processor: Optional[str] = None
    seconds: float = 0.0
    pairs: list[PairResult] = Field(default_factory=list)
    drift: list[DriftResult] = Field(default_factory=list)
    classifiers: list[ClassifierResult] = Field(default_factory=list)
    primary: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="per artifact: the headline task metrics used by gates and plots")


class Scenario(_Model):
    """MLPerf-style summary: single-stream = p90 latency at batch 1; offline = best throughput."""

    scenario: Literal["single-stream", "offline"]
    artifact: str
    tower: str
    batch: int
    seq: Optional[int] = None
    value: float
    unit: str


class Gate(_Model):
    name: str
    kind: Literal["latency", "accuracy", "memory"]
    artifact: str
    subject: str
    threshold: Optional[float] = None
    value: Optional[float] = None
    baseline: Optional[float] = None
    passed: Optional[bool] = Field(None, description="None: no threshold set (reported, not enforced)")
    message: str = ""
    ci_low: Optional[float] = Field(None, description="latency: the change's confidence interval, low end")
    ci_high: Optional[float] = Field(None, description="latency: the change's confidence interval, high end")
    verdict: Optional[str] = Field(None, description="pass | regression | within noise | faster | info")


class RailPower(_Model):
    rail: str
    avg_w: float
    peak_w: float


class EnergyResult(_Model):
    """One artifact x tower x shape run alone, back to back, for an energy window while tegrastats samples."""

    artifact: str
    tower: str
    batch: int
    seq: Optional[int] = None
    seconds: float
    runs: int
    items: int
    samples: int = Field(description="tegrastats readings inside the window")
    latency_ms_mean: float
    avg_power_w: Optional[float] = None
    peak_power_w: Optional[float] = None
    energy_mj_per_run: Optional[float] = None
    energy_mj_per_item: Optional[float] = Field(None, description="energy per inference of one item (mJ)")
    items_per_joule: Optional[float] = None
    energy_mj_per_item_above_idle: Optional[float] = None
    rails: dict[str, float] = Field(default_factory=dict, description="average W per rail in the window")


class Telemetry(_Model):
    """Jetson power and clocks during the benchmark (``tegrastats`` / ``nvpmodel`` / ``jetson_clocks``)."""

    source: Literal["tegrastats"] = "tegrastats"
    interval_ms: int
    energy_window_s: float
    model: Optional[str] = None
    l4t: Optional[str] = None
    jetpack: Optional[str] = None
    power_mode: Optional[str] = Field(None, description="nvpmodel -q")
    power_mode_id: Optional[int] = None
    clocks_locked: Optional[bool] = Field(None, description="jetson_clocks --show (None: could not be read)")
    clocks_mhz: dict[str, dict[str, float]] = Field(default_factory=dict)
    total_rail: str = Field("none", description="VDD_IN / POM_5V_IN, or the sum of rails where none exists")
    idle_power_w: Optional[float] = None
    samples: int = Field(0, description="tegrastats readings during the timed rounds")
    rails: list[RailPower] = Field(default_factory=list, description="per rail during the timed rounds")
    avg_power_w: Optional[float] = None
    peak_power_w: Optional[float] = None
    gpu_load_pct_avg: Optional[float] = None
    gpu_freq_mhz_avg: Optional[float] = None
    gpu_freq_mhz_max: Optional[float] = None
    emc_freq_mhz_avg: Optional[float] = None
    emc_load_pct_avg: Optional[float] = None
    ram_used_mb_avg: Optional[float] = None
    ram_used_mb_peak: Optional[float] = None
    ram_total_mb: Optional[int] = None
    energy: list[EnergyResult] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)


class BenchReport(_Model):
    schema_name: Literal["mmdk.bench.report"] = SCHEMA_NAME
    schema_version: int = SCHEMA_VERSION
    mmdk_version: str
    created: str
    duration_s: float
    config: BenchConfig
    target: TargetProfile
    environment: Environment
    reference: Optional[str] = None
    baseline: Optional[str] = Field(None, description="label every speedup is relative to")
    artifacts: list[ArtifactInfo]
    latency: list[LatencyResult]
    speedups: dict[str, Speedup] = Field(default_factory=dict,
                                         description="per artifact: geometric mean over its configs")
    scenarios: list[Scenario] = Field(default_factory=list)
    accuracy: Optional[AccuracyReport] = None
    gates: list[Gate] = Field(default_factory=list)
    passed: bool = True
    warnings: list[str] = Field(default_factory=list)
    telemetry: Optional[Telemetry] = Field(None, description="Jetson power/energy (present when tegrastats ran)")
    processes: int = Field(1, description="worker processes the timed rounds were spread over")
    precision_reached_pct: Optional[float] = Field(
        None, description="the widest per-artifact speedup interval, as +-% of its ratio (compare with "
                          "config.timing.precision)")

    def artifact(self, label: str) -> ArtifactInfo:
        for a in self.artifacts:
            if a.label == label:
                return a
        raise KeyError(label)

    def failed_gates(self) -> list[Gate]:
        return [g for g in self.gates if g.passed is False]

    def to_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"

    @classmethod
    def read(cls, path: str | Path) -> "BenchReport":
        from ..errors import UserInputError, validation_message

        p = Path(path)
        try:
            data = json.loads(p.read_text())
        except FileNotFoundError:
            raise UserInputError(f"report {p} does not exist", hint="write one with mmdk bench --report FILE") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UserInputError(f"report {p} is not valid JSON ({exc})") from None
        if not isinstance(data, dict) or data.get("schema_name") != SCHEMA_NAME:
            raise UserInputError(f"{p} is not an mmdk bench report (schema_name != {SCHEMA_NAME!r})")
        if int(data.get("schema_version", 0)) > SCHEMA_VERSION:
            raise UserInputError(f"{p} has schema version {data.get('schema_version')}, newer than this mmdk's "
                                 f"{SCHEMA_VERSION}", hint="upgrade mmdeploy_kit to read it")
        try:
            return cls.model_validate(data)
        except ValueError as exc:
            raise UserInputError(f"report {p} does not match the schema: {validation_message(exc)}") from None


def json_schema() -> dict[str, Any]:
    schema = BenchReport.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://mmdeploy-kit.invalid/schemas/bench_report.v{SCHEMA_VERSION}.schema.json"
    return schema


def schema_path() -> Path:
    return SCHEMA_DIR / f"bench_report.v{SCHEMA_VERSION}.schema.json"


def write_schema(path: Optional[Path] = None) -> Path:
    path = path or schema_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_schema(), indent=2, sort_keys=True) + "\n")
    return path


if __name__ == "__main__":  # pragma: no cover
    print(write_schema())
