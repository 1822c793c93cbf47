"""Environment fingerprint recorded in every benchmark report, and hardware detection for targets.

Torch-free and import-free for the heavy packages: versions come from package metadata, the GPU from
``nvidia-smi``, the CPU from ``/proc/cpuinfo``, a Jetson from ``/etc/nv_tegra_release`` and the device tree.
Every probe is best effort: an unreadable file or a missing tool leaves the field empty.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

ISA_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8",
             "amx_bf16", "asimd", "asimddp", "sve")
PACKAGES = ("mmdeploy_kit", "numpy", "torch", "transformers", "onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt",
            "torch-tensorrt", "torch_tensorrt", "openvino", "nncf")


class GpuInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    memory_mb: Optional[int] = None
    driver: Optional[str] = None
    cuda: Optional[str] = None


class RemoteHost(BaseModel):
    """Where a ``--host`` run went: the host as the user gave it (an ~/.ssh/config alias, user@host[:port])
    and the address the SSH connection reached."""

    model_config = ConfigDict(extra="forbid")

    host: str
    address: str
    user: Optional[str] = None
    mmdk: Optional[str] = Field(None, description="the remote mmdk command and its version")


class JetsonInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Optional[str] = None
    l4t: Optional[str] = None
    jetpack: Optional[str] = None
    power_mode: Optional[str] = None


class Environment(BaseModel):
    """Where a benchmark ran. Compare numbers only between reports with matching fingerprints."""

    model_config = ConfigDict(extra="forbid")

    hostname: str = ""
    os: str = ""
    kernel: str = ""
    machine: str = ""
    python: str = ""
    cpu_model: str = ""
    cpu_flags: list[str] = Field(default_factory=list)
    cpu_cores_logical: int = 0
    cpu_cores_available: int = 0
    ram_total_mb: Optional[int] = None
    threads: Optional[int] = None
    load_average: Optional[list[float]] = Field(None, description="1/5/15-minute load average at the start")
    packages: dict[str, str] = Field(default_factory=dict)
    gpus: list[GpuInfo] = Field(default_factory=list)
    jetson: Optional[JetsonInfo] = None
    env_vars: dict[str, str] = Field(default_factory=dict)
    remote: Optional[RemoteHost] = Field(None, description="set when the benchmark ran on a device over SSH")

    def short(self) -> str:
        """One line for reports: CPU, cores, flags, GPU, python, runtimes."""
        gpu = f", {self.gpus[0].name}" if self.gpus else ""
        jet = f", {self.jetson.model}" if self.jetson and self.jetson.model else ""
        rt = ", ".join(f"{k} {v}" for k, v in self.packages.items() if k in ("torch", "onnxruntime", "tensorrt"))
        flags = "/".join(f for f in self.cpu_flags if f in ("avx2", "avx512_vnni", "amx_tile")) or "-"
        return (f"{self.cpu_model or self.machine} ({self.cpu_cores_available} cores, {flags}){gpu}{jet}; "
                f"python {self.python}; {rt}")


def _read(path: str | Path) -> Optional[str]:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return None


def _run(cmd: list[str], timeout: float = 5.0) -> Optional[str]:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout if res.returncode == 0 else None


def cpu_info() -> tuple[str, list[str]]:
    """CPU model name and the ISA flags of interest that it reports."""
    text = _read("/proc/cpuinfo") or ""
    model = ""
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return model or platform.processor() or platform.machine(), [f for f in ISA_FLAGS if f in flags]


CPU_ISAS = ("avx512_vnni", "avx2", "arm64")
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def detect_isa(flags: Optional[list[str]] = None, machine: Optional[str] = None) -> str:
    """The CPU kind ONNX Runtime's INT8 kernels depend on: ``avx512_vnni`` (VNNI: AVX-512 VNNI, AVX-VNNI, AMX),
    ``avx2`` (x86-64 without VNNI: u8 x s8 through saturating ``vpmaddubsw``) or ``arm64``."""
    machine = (machine if machine is not None else platform.machine()).lower()
    if machine in ("aarch64", "arm64") or machine.startswith("armv8"):
        return "arm64"
    if flags is None:
        flags = cpu_info()[1]
    return "avx512_vnni" if any(f in flags for f in VNNI_FLAGS) else "avx2"


def load_average() -> Optional[list[float]]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def ram_total_mb() -> Optional[int]:
    m = re.search(r"MemTotal:\s+(\d+) kB", _read("/proc/meminfo") or "")
    return int(m.group(1)) // 1024 if m else None


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@lru_cache(maxsize=1)
def nvidia_gpus() -> tuple[GpuInfo, ...]:
    """GPUs listed by ``nvidia-smi`` (empty without a driver)."""
    text = _run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader,nounits"])
    if not text:
        return ()
    cuda = None
    header = _run(["nvidia-smi"]) or ""
    m = re.search(r"CUDA Version:\s*([\d.]+)", header)
    if m:
        cuda = m.group(1)
    gpus = []
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if not parts or not parts[0]:
            continue
        mem = int(float(parts[1])) if len(parts) > 1 and re.match(r"^[\d.]+$", parts[1]) else None
        gpus.append(GpuInfo(name=parts[0], memory_mb=mem, driver=parts[2] if len(parts) > 2 else None, cuda=cuda))
    return tuple(gpus)


@lru_cache(maxsize=1)
def jetson_info() -> Optional[JetsonInfo]:
    """Jetson model, L4T release, JetPack version and nvpmodel power mode, when this is a Jetson."""
    release = _read("/etc/nv_tegra_release")
    model = (_read("/proc/device-tree/model") or "").replace("\x00", "").strip() or None
    if release is None and not (model and "jetson" in model.lower()):
        return None
    l4t = None
    if release:
        m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", release)
        l4t = f"{m.group(1)}.{m.group(2)}" if m else release.splitlines()[0].strip()
    jetpack = None
    dpkg = _run(["dpkg-query", "-W", "-f=${Version}", "nvidia-jetpack"])
    if dpkg:
        jetpack = dpkg.strip()
    power = None
    q = _run(["nvpmodel", "-q"])
    if q:
        m = re.search(r"NV Power Mode:\s*(.+)", q)
        power = m.group(1).strip() if m else q.strip().splitlines()[0]
    return JetsonInfo(model=model, l4t=l4t, jetpack=jetpack, power_mode=power)


def gpu_memory_used_bytes(index: int = 0) -> Optional[int]:
    """Device-wide used memory of GPU ``index`` per nvidia-smi (runtimes without their own counter)."""
    text = _run(["nvidia-smi", f"--id={index}", "--query-gpu=memory.used", "--format=csv,noheader,nounits"])
    try:
        return int(float(text.strip().splitlines()[0])) * 2**20 if text else None
    except (ValueError, IndexError):
        return None


def has_nvidia_gpu() -> bool:
    """A CUDA-capable NVIDIA device is present (driver loaded), discrete or Jetson iGPU."""
    if nvidia_gpus():
        return True
    if jetson_info() is not None:
        return any(Path(p).exists() for p in ("/dev/nvhost-gpu", "/dev/nvhost-ctrl-gpu", "/dev/nvgpu"))
    return Path("/proc/driver/nvidia/version").exists() and Path("/dev/nvidia0").exists()


def fingerprint(threads: Optional[int] = None) -> Environment:
    model, flags = cpu_info()
    env_vars = {k: v for k, v in os.environ.items()
                if k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "MMDK_THREADS", "CUDA_VISIBLE_DEVICES",
                         "OMP_WAIT_POLICY", "KMP_BLOCKTIME")}
    return Environment(
        hostname=platform.node(),
        os=f"{platform.system()} {_os_release()}".strip(),
        kernel=platform.release(),
        machine=platform.machine(),
        python=f"{platform.python_version()} ({sys.implementation.name})",
        cpu_model=model,
        cpu_flags=flags,
        cpu_cores_logical=os.cpu_count() or 0,
        cpu_cores_available=available_cores(),
        ram_total_mb=ram_total_mb(),
        threads=threads,
        load_average=load_average(),
        packages=_installed_packages(),
        gpus=list(nvidia_gpus()),
        jetson=jetson_info(),
        env_vars=env_vars,
    )


def _installed_packages() -> dict[str, str]:
    """Versions of the installed :data:`PACKAGES` (python and platform have their own fields)."""
    from ..artifacts import package_versions

    return {k: v for k, v in package_versions(*PACKAGES).items() if k in PACKAGES}


def _os_release() -> str:
    text = _read("/etc/os-release") or ""
    m = re.search(r'^PRETTY_NAME="?([^"\n]+)"?', text, re.M)
    return m.group(1) if m else platform.version()


# ---- process memory (Linux) -------------------------------------------------------------------------------
def _status_kb(field: str) -> Optional[int]:
    m = re.search(rf"^{field}:\s+(\d+) kB", _read("/proc/self/status") or "", re.M)
    return int(m.group(1)) * 1024 if m else None


def rss_bytes() -> Optional[int]:
    """Current resident set size of this process."""
    return _status_kb("VmRSS")


def peak_rss_bytes() -> Optional[int]:
    """Peak RSS since start (or since the last :func:`reset_peak_rss`)."""
    val = _status_kb("VmHWM")
    if val is not None:
        return val
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    except (ImportError, OSError):
        return None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (Linux >= 4.0); False where not permitted."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False
