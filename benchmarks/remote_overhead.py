"""What does `mmdk bench --host` cost on top of a local run, and what does the device cache save?

Against the loopback SSH server of the tests (asyncssh on 127.0.0.1; the "device" is this machine with a temporary
HOME and this checkout's mmdk), in ONE interleaved run: a 16 MB ONNX MatMul model benchmarked by a fresh ``mmdk`` process locally and through
``--host`` alternately (local, remote, remote, local, ...; the model is already in the device cache), and, in
the same rounds, connect + copy of a new 16 MB payload vs connect + cache hit. Prints seconds per run, the median
remote - local overhead, and the copy cost (median fresh - hit). Loopback has no network latency or bandwidth
limit: on a real device add the link's transfer time (size / bandwidth) to the first run only.

    .venv/bin/python benchmarks/remote_overhead.py [--rounds 4]

Writes benchmarks/results/remote_overhead.txt.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _model(path: Path, n: int = 2048) -> Path:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((n, n)).astype("float32"), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", n])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", n])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    import os
    import subprocess

    from mmdeploy_kit.runtime import env
    from mmdeploy_kit.remote.cache import file_item
    from mmdeploy_kit.remote.session import RemoteSession
    from mmdeploy_kit.remote.ssh import SshTarget
    from tests.fixtures.ssh_server import LoopbackSshServer

    work = Path(tempfile.mkdtemp(prefix="mmdk-remote-overhead-"))
    model = _model(work / "mm.onnx")
    server = LoopbackSshServer(work / "ssh").start()
    mmdk_exe = str(Path(sys.executable).with_name("mmdk"))
    quick = [mmdk_exe, "bench", str(model), "--batch", "1", "--threads", "1", "--min-time", "0.2", "--min-runs", "5",
             "--min-rounds", "3", "--warmup", "2", "--quiet"]
    remote = ["--host", server.host, *server.ssh_args(), "--remote-mmdk", mmdk_exe]
    target = SshTarget(server.host, key=str(server.client_key),
                       options=(f"UserKnownHostsFile={server.known_hosts}", "GlobalKnownHostsFile=/dev/null"))
    envv = {**os.environ, "OMP_NUM_THREADS": "1"}

    def timed(argv: list[str]) -> float:
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, env=envv)
        return time.perf_counter() - t0

    def copy_once(fresh: bool) -> float:
        """connect (version check, cache lookup) + upload: a new 16 MB payload, or the cached model."""
        path = model
        if fresh:
            path = work / f"payload{time.perf_counter_ns()}.bin"
            path.write_bytes(os.urandom(16 * 2**20))
        t0 = time.perf_counter()
        session = RemoteSession(target, remote_mmdk=mmdk_exe)
        item = file_item(path)
        session.connect([item])
        session.upload([item])
        return time.perf_counter() - t0

    local, remote_t, fresh, hit = [], [], [], []
    try:
        timed(quick + ["--report", str(work / "warm.json")] + remote)   # first copy of the model, not timed
        for r in range(args.rounds):
            pair = {}
            for kind in (("local", "remote") if r % 2 == 0 else ("remote", "local")):
                pair[kind] = timed(quick + ["--report", str(work / f"{kind}{r}.json")] + (remote if kind == "remote" else []))
            local.append(pair["local"])
            remote_t.append(pair["remote"])
            for kind in (("fresh", "hit") if r % 2 == 0 else ("hit", "fresh")):
                (fresh if kind == "fresh" else hit).append(copy_once(kind == "fresh"))
    finally:
        server.stop()
    cpu = env.fingerprint()
    over = [r - l for r, l in zip(remote_t, local)]
    copy_s = statistics.median(f - h for f, h in zip(fresh, hit))
    lines = [f"machine: {cpu.cpu_model} ({cpu.cpu_cores_available} cores, "
             f"{'/'.join(f for f in cpu.cpu_flags if f in ('avx2', 'avx512_vnni')) or '-'}), loopback SSH (asyncssh), "
             f"{args.rounds} interleaved rounds",
             "mmdk bench, local process (s):          " + ", ".join(f"{t:.2f}" for t in local),
             "mmdk bench --host, cache hit (s):       " + ", ".join(f"{t:.2f}" for t in remote_t),
             f"remote overhead per run (median of remote - local): {statistics.median(over):.2f} s "
             f"(ratio {statistics.median(r / l for r, l in zip(remote_t, local)):.2f}x)",
             "connect + copy 16 MB new payload (s):   " + ", ".join(f"{t:.2f}" for t in fresh),
             "connect + cache hit (s):                " + ", ".join(f"{t:.2f}" for t in hit),
             f"copy cost of 16 MB over loopback (median of fresh - hit): {copy_s:.2f} s "
             f"({16 / copy_s if copy_s > 0 else float('inf'):.0f} MB/s incl. hashing)"]
    text = "\n".join(lines)
    print(text)
    out = ROOT / "benchmarks" / "results" / "remote_overhead.txt"
    out.write_text(text + "\n")


if __name__ == "__main__":
    main()
