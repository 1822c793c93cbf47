"""`mmdk build-engines BUNDLE --host` against the loopback SSH server, and the directory download it uses.

This machine has no GPU, so the device's build fails the way a build without TensorRT fails (exit 3): the error
comes back with its exit code and the local bundle is unchanged. The download of a built folder is exercised with
a deterministic command instead (`mmdk data synth`: same arguments, byte-identical files)."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

from tests.fixtures.ssh_server import LoopbackSshServer

MMDK = Path(sys.executable).with_name("mmdk")


@pytest.fixture
def server(tmp_path):
    srv = LoopbackSshServer(tmp_path / "ssh").start()
    yield srv
    srv.stop()


def _digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_remote_folder_comes_back_identical(server, tmp_path):
    from mmdeploy_kit.data.synth import synthesize_dataset
    from mmdeploy_kit.remote.session import RemoteSession
    from mmdeploy_kit.remote.ssh import SshTarget

    opts = (f"UserKnownHostsFile={server.known_hosts}", "GlobalKnownHostsFile=/dev/null")
    session = RemoteSession(SshTarget(server.host, key=str(server.client_key), options=opts), remote_mmdk=str(MMDK))
    session.connect()
    run = session.new_run_dir()
    rc, _, err = session.run_mmdk(["data", "synth", "-o", f"{run}/out", "--n-train", "3", "--n-val", "2",
                                   "--image-size", "32"], what="synth", run_dir=run, keep=True)
    assert rc == 0, err
    got = tmp_path / "got"
    got.mkdir()
    n = session.fetch_dir(f"{run}/out", got)
    session.remove(run)
    local = Path(synthesize_dataset(tmp_path / "local", n_train=3, n_val=2, image_size=32, seed=0))
    assert n == len(_digest(local)) and _digest(got) == _digest(local)
    assert not Path(run).exists()


def test_build_engines_on_a_device_without_gpu_keeps_the_bundle(server, tmp_path, tiny_clip_dir, mmdk):
    import mmdeploy_kit as mk
    from mmdeploy_kit.runtime import trt_env

    if trt_env.detect().can_build:
        pytest.skip("this machine can build TensorRT engines")
    bundle = tmp_path / "bundle"
    mk.export(tiny_clip_dir, bundle, target="tensorrt", precision="fp16", build="defer", towers=["vision"])
    before = _digest(bundle)
    res = mmdk("build-engines", bundle, "--host", server.host, *server.ssh_args(), "--remote-mmdk", MMDK)
    assert res.code == 3 and res.one_line_error(), res.err
    assert res.error_lines[0].startswith(f"error: on {server.host}: building TensorRT engines needs the tensorrt")
    assert _digest(bundle) == before and len(server.uploads()) == 1
    runs = server.home / ".cache" / "mmdeploy_kit" / "remote" / "runs"
    assert not runs.exists() or not any(runs.iterdir())
