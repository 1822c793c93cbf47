"""`mmdk bench --host` end to end against a real SSH server on 127.0.0.1 (asyncssh, started by the test) that runs
the commands on this machine: the "device" is a temporary HOME and this checkout's mmdk. Covers the copy, the
cache hit on the second run, version mismatch, a missing remote mmdk, an unknown host key, a connection dropped
mid-run and Ctrl-C (both must stop the remote process). Nothing reaches any address but loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.ssh_server import LoopbackSshServer

ROOT = Path(__file__).resolve().parents[2]
MMDK = Path(sys.executable).with_name("mmdk")
QUICK = ["--batch", "1", "--threads", "1", "--min-time", "0.02", "--min-runs", "3", "--min-rounds", "3",
         "--warmup", "1"]
pytestmark = pytest.mark.skipif(not Path("/usr/bin/ssh").exists() and not os.path.exists("/bin/ssh"),
                                reason="needs the OpenSSH client")


@pytest.fixture
def server(tmp_path):
    srv = LoopbackSshServer(tmp_path / "ssh").start()
    yield srv
    srv.stop()


@pytest.fixture
def model(tmp_path):
    from tests.unit.test_jetson_bench import _tiny_onnx

    return _tiny_onnx(tmp_path / "mm.onnx")


def remote(server, *extra, mmdk_cmd=None):
    return ["--host", server.host, *server.ssh_args(), "--remote-mmdk", str(mmdk_cmd or MMDK), *extra]


def _cache(server) -> Path:
    return server.home / ".cache" / "mmdeploy_kit" / "remote"


def test_copy_then_cache_hit_and_local_rendering(server, model, tmp_path, mmdk):
    rep, md, html = tmp_path / "r.json", tmp_path / "r.md", tmp_path / "r.html"
    res = mmdk("bench", model, *QUICK, *remote(server), "--report", rep, "--markdown", md, "--html", html)
    assert res.code == 0, res.err
    assert len(server.uploads()) == 1
    entries = [p for p in _cache(server).iterdir() if len(p.name) == 64]
    assert len(entries) == 1 and (entries[0] / "mm.onnx").read_bytes() == model.read_bytes()
    r = json.loads(rep.read_text())
    assert r["environment"]["remote"]["host"] == server.host
    assert r["environment"]["remote"]["address"] == f"127.0.0.1:{server.port}"
    assert r["environment"]["remote"]["mmdk"].endswith("0.1.0")
    assert r["artifacts"][0]["source"] == str(model)          # device paths mapped back to the path given here
    assert r["artifacts"][0]["label"] == "mm" and r["latency"][0]["stats"]["n"] >= 3
    assert f"{server.host} (127.0.0.1:{server.port})" in md.read_text() and server.host in html.read_text()
    assert not any((_cache(server) / "runs").iterdir())        # the run folder was cleaned up

    rep2 = tmp_path / "r2.json"
    res = mmdk("bench", model, *QUICK, *remote(server), "--report", rep2)
    assert res.code == 0, res.err
    assert len(server.uploads()) == 1, "the second run copied again"
    assert "nothing to copy" in res.err
    assert "0 input(s) copied, 1 from the device cache" in " ".join(json.loads(rep2.read_text())["warnings"])


def test_cache_is_content_addressed(server, model, tmp_path):
    """The same bytes from another path are not copied again; changed weights are (session level: no bench)."""
    from mmdeploy_kit.remote.cache import file_item
    from mmdeploy_kit.remote.session import RemoteSession
    from mmdeploy_kit.remote.ssh import SshTarget
    from tests.unit.test_jetson_bench import _tiny_onnx

    same = tmp_path / "elsewhere" / "mm.onnx"
    same.parent.mkdir()
    same.write_bytes(model.read_bytes())
    (tmp_path / "other").mkdir()
    other = _tiny_onnx(tmp_path / "other" / "mm.onnx", seed=1)
    opts = (f"UserKnownHostsFile={server.known_hosts}", "GlobalKnownHostsFile=/dev/null")
    copied = []
    for path in (model, same, other, model):
        session = RemoteSession(SshTarget(server.host, key=str(server.client_key), options=opts), remote_mmdk=str(MMDK))
        item = file_item(path)
        session.connect([item])
        copied.append(len(session.upload([item])))
    assert copied == [1, 0, 1, 0] and len(server.uploads()) == 2
    assert len([p for p in _cache(server).iterdir() if len(p.name) == 64]) == 2


def test_remote_version_mismatch(server, model, tmp_path, mmdk):
    fake = tmp_path / "old-mmdk"
    fake.write_text("#!/bin/sh\necho 'mmdk 0.0.9'\n")
    fake.chmod(0o755)
    rep = tmp_path / "r.json"
    res = mmdk("bench", model, *QUICK, *remote(server, mmdk_cmd=fake), "--report", rep)
    assert res.code == 7 and res.one_line_error(), res.err
    assert "has mmdk 0.0.9, this machine has 0.1.0" in res.err and "pip install" in res.err and "3.10" in res.err
    assert not rep.exists() and not server.uploads()


def test_remote_mmdk_missing(server, model, tmp_path, mmdk):
    rep = tmp_path / "r.json"
    res = mmdk("bench", model, *QUICK, *remote(server, mmdk_cmd="/nonexistent/bin/mmdk"), "--report", rep)
    assert res.code == 7 and res.one_line_error(), res.err
    assert "has no '/nonexistent/bin/mmdk' command" in res.err and not rep.exists()


def test_unknown_host_key_is_refused_then_accepted_on_request(server, model, tmp_path, mmdk):
    server.known_hosts.write_text("")
    rep = tmp_path / "r.json"
    res = mmdk("bench", model, *QUICK, *remote(server), "--report", rep)
    assert res.code == 7 and res.one_line_error(), res.err
    assert "host key of" in res.err and "--accept-new-host-key" in res.err
    assert not rep.exists() and server.commands == []          # refused before any command ran
    res = mmdk("bench", model, *QUICK, *remote(server, "--accept-new-host-key"), "--report", rep)
    assert res.code == 0, res.err
    key = server.host_key.export_public_key().decode().split()[1]
    assert key in server.known_hosts.read_text()   # trusted from now on (hashed or not, per ssh_config)


def test_remote_error_keeps_its_exit_code(server, model, tmp_path, mmdk):
    res = mmdk("bench", model, *QUICK, "--batch", "0", *remote(server), "--report", tmp_path / "r.json")
    assert res.code == 2 and res.one_line_error(), res.err
    res = mmdk("bench", model, "--target", "gpu", *QUICK, *remote(server), "--report", tmp_path / "r.json")
    assert res.code == 3 and res.one_line_error() and f"on {server.host}:" in res.err, res.err
    assert not (tmp_path / "r.json").exists()


def _remote_pid(server, timeout: float = 60) -> int:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        pids = list((_cache(server) / "runs").glob("*/pid")) if (_cache(server) / "runs").exists() else []
        if pids and pids[0].read_text().strip():
            return int(pids[0].read_text())
        time.sleep(0.1)
    raise AssertionError("the remote run did not start")


def _gone(pid: int, timeout: float = 20) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        stat = Path(f"/proc/{pid}/stat")
        if stat.exists() and stat.read_text().split(") ")[-1].startswith("Z"):
            return True  # exited, not yet reaped by the server's subprocess handling
        time.sleep(0.1)
    return False


LONG = ["--batch", "1", "--threads", "1", "--min-time", "60", "--max-time", "90", "--min-runs", "3",
        "--min-rounds", "3", "--warmup", "1"]


def test_connection_dropped_mid_run(server, model, tmp_path):
    server.drop_when = (" bench ", 6.0)   # the device vanishes 6 s into the benchmark
    rep = tmp_path / "r.json"
    proc = subprocess.Popen([str(MMDK), "bench", str(model), *LONG, *remote(server), "--report", str(rep)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    pid = _remote_pid(server)
    out, err = proc.communicate(timeout=120)
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert proc.returncode == 7 and len(errors) == 1, err
    assert "connection to" in errors[0] and "was lost during the benchmark" in errors[0]
    assert not rep.exists()
    assert _gone(pid), "the remote mmdk survived the dropped connection"


def test_ctrl_c_stops_the_remote_process(server, model, tmp_path):
    rep = tmp_path / "r.json"
    proc = subprocess.Popen([str(MMDK), "bench", str(model), *LONG, *remote(server), "--report", str(rep)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    pid = _remote_pid(server)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert not rep.exists()
    assert _gone(pid), "the remote mmdk survived Ctrl-C"


@pytest.mark.slow
def test_export_vs_reference_with_data_on_the_device(server, tmp_path, tiny_clip_dir, mmdk):
    """The issue's command: an ONNX export vs its torch reference with a data manifest, run on the device; the
    manifest's images and the tokenizer travel along, accuracy comes back."""
    import shutil

    import mmdeploy_kit as mk
    from mmdeploy_kit.data.synth import synthesize_dataset
    from tests.e2e.test_bench_cli import add_processor

    data = Path(synthesize_dataset(tmp_path / "data", n_train=4, n_val=24, image_size=32, seed=0))
    clip = tmp_path / "clip"
    shutil.copytree(tiny_clip_dir, clip)
    add_processor(clip, data)
    mk.export(clip, tmp_path / "onnx")
    rep = tmp_path / "r.json"
    res = mmdk("bench", tmp_path / "onnx", "--reference", clip, "--data", data / "val.jsonl", *QUICK, *remote(server),
               "--report", rep, "--markdown", tmp_path / "r.md")
    assert res.code == 0, res.err
    r = json.loads(rep.read_text())
    assert r["config"]["data"] == str(data / "val.jsonl") and r["config"]["reference"] == str(clip)
    assert r["accuracy"]["n_samples"] == 24 and r["accuracy"]["pairs"]
    assert {a["source"] for a in r["artifacts"]} == {str(clip), str(tmp_path / "onnx")}
    assert len(server.uploads()) == 1
