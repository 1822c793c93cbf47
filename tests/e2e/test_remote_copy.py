"""The pieces of the remote path that need no benchmark: --host parsing, ssh failure messages, the data manifest
bundle (media and classes.json travel with it; media outside its folder are rewritten), and a full disk on the
device (checked before copying, and a copy that runs out of space) against the loopback SSH server."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from mmdeploy_kit.errors import RemoteError
from mmdeploy_kit.remote.cache import file_item, manifest_item, write_tar
from mmdeploy_kit.remote.ssh import Ssh, SshTarget, connection_error, split_host


@pytest.mark.parametrize("host,expected", [
    ("nvidia@orin.local", ("nvidia@orin.local", None)), ("nvidia@10.0.0.7:2222", ("nvidia@10.0.0.7", 2222)),
    ("orin", ("orin", None)), ("root@[fe80::1]:22", ("root@fe80::1", 22)), ("[::1]", ("::1", None)),
])
def test_split_host(host, expected):
    assert split_host(host) == expected


@pytest.mark.parametrize("bad", ["", "-oProxyCommand=x", "a b", "host:99999", "host:abc"])
def test_bad_hosts_are_one_line_errors(bad):
    with pytest.raises(RemoteError):
        split_host(bad)


def test_ssh_command_line_checks_host_keys_and_never_prompts():
    argv = Ssh(SshTarget("nvidia@orin:2200", key="/k", options=("ProxyJump=gw",))).argv("true")
    joined = " ".join(argv)
    assert argv[:3] == ["ssh", "-o", "ProxyJump=gw"]  # the user's options first: ssh keeps the first value
    assert "-i /k" in joined and "-p 2200" in joined and "BatchMode=yes" in joined
    assert "StrictHostKeyChecking=yes" in joined and argv[-3:] == ["nvidia@orin", "--", "true"]
    accept = " ".join(Ssh(SshTarget("orin", accept_new_host_key=True)).argv("true"))
    assert "StrictHostKeyChecking=accept-new" in accept


@pytest.mark.parametrize("stderr,words", [
    ("No ED25519 host key is known for orin and you have requested strict checking.\nHost key verification failed.",
     "host key of orin"),
    ("nvidia@orin: Permission denied (publickey).", "refused the login"),
    ("ssh: Could not resolve hostname orin: Name or service not known", "cannot resolve"),
    ("ssh: connect to host orin port 22: Connection refused", "refused the SSH connection"),
    ("Timeout, server orin not responding.", "was lost"),
    ("client_loop: send disconnect: Broken pipe", "was lost"),
])
def test_connection_errors_are_one_line(stderr, words):
    err = connection_error("orin", stderr, started=True, what="benchmark")
    assert words in err.message and "\n" not in str(err) and err.exit_code == 7


def test_manifest_bundle(tmp_path):
    from PIL import Image

    data = tmp_path / "data"
    (data / "img").mkdir(parents=True)
    outside = tmp_path / "elsewhere.png"
    for p in (data / "img" / "a.png", outside):
        Image.new("RGB", (4, 4), (255, 0, 0)).save(p)
    (data / "classes.json").write_text('["red", "blue"]')
    (data / "val.jsonl").write_text(json.dumps({"image": "img/a.png", "text": "red", "label": "red"}) + "\n" +
                                    json.dumps({"image": str(outside), "text": "red", "label": "red"}) + "\n")
    item, inner = manifest_item(data / "val.jsonl")
    assert inner == "data/val.jsonl" and item.name == "data"
    assert "data/img/a.png" in item.files and "data/classes.json" in item.files
    ext = [k for k in item.files if k.startswith("data/_ext/")]
    assert len(ext) == 1 and ext[0].endswith("_elsewhere.png")
    rows = [json.loads(x) for x in item.files["data/val.jsonl"].decode().splitlines()]
    assert rows[0]["image"] == "img/a.png" and rows[1]["image"] == ext[0][len("data/"):]
    # the tar holds <sha256>/<name>/..., and the hash covers the contents
    buf = io.BytesIO()
    write_tar([item], buf)
    names = tarfile.open(fileobj=io.BytesIO(buf.getvalue())).getnames()
    assert f"{item.sha256}/data/img/a.png" in names
    sha = item.sha256
    (data / "classes.json").write_text('["red", "green"]')
    assert manifest_item(data / "val.jsonl")[0].sha256 != sha


def test_missing_media_fail_before_any_connection(tmp_path):
    from mmdeploy_kit.errors import DataError

    (tmp_path / "val.jsonl").write_text('{"image": "nope.png", "text": "x"}\n')
    with pytest.raises(DataError):
        manifest_item(tmp_path / "val.jsonl")


# ---- a full disk on the device --------------------------------------------------------------------------------
@pytest.fixture
def server(tmp_path):
    from tests.fixtures.ssh_server import LoopbackSshServer

    srv = LoopbackSshServer(tmp_path / "ssh").start()
    srv.device_bin = tmp_path / "device_bin"
    srv.device_bin.mkdir()
    yield srv
    srv.stop()


def _fake(bin_dir: Path, name: str, script: str) -> None:
    p = bin_dir / name
    p.write_text("#!/bin/sh\n" + script + "\n")
    p.chmod(0o755)


def _bench(mmdk, server, model, report):
    import sys

    return mmdk("bench", model, "--batch", "1", "--min-time", "0.02", "--min-runs", "3", "--min-rounds", "3",
                "--host", server.host, *server.ssh_args(), "--remote-mmdk", str(Path(sys.executable).with_name("mmdk")),
                "--report", report)


def test_disk_full_is_checked_before_copying(server, tmp_path, mmdk):
    _fake(server.device_bin, "df", 'echo "Filesystem 1024-blocks Used Available Capacity Mounted on"; '
                                    'echo "/dev/mmcblk0p1 30000000 29999990 10 100% /"')
    model = tmp_path / "m.onnx"
    model.write_bytes(b"\0" * 50_000)
    res = _bench(mmdk, server, model, tmp_path / "r.json")
    assert res.code == 7 and res.one_line_error(), res.err
    assert "not enough disk space" in res.err and "0.0 MB free" in res.err and not server.uploads()
    assert not (tmp_path / "r.json").exists()


def test_disk_full_during_the_copy(server, tmp_path, mmdk):
    _fake(server.device_bin, "tar", 'cat >/dev/null; echo "tar: 1/m.onnx: Cannot write: No space left on device" >&2; '
                                     "exit 2")
    model = tmp_path / "m.onnx"
    model.write_bytes(b"\0" * 50_000)
    res = _bench(mmdk, server, model, tmp_path / "r.json")
    assert res.code == 7 and res.one_line_error(), res.err
    assert "ran out of disk space while copying" in res.err and not (tmp_path / "r.json").exists()
    cache = server.home / ".cache" / "mmdeploy_kit" / "remote"
    assert [p.name for p in cache.iterdir() if not p.name.startswith(".")] == []   # nothing half-copied
    assert not list(cache.glob(".incoming-*"))


def test_file_item_hash_is_content(tmp_path):
    a, b = tmp_path / "a" / "m.onnx", tmp_path / "b" / "m.onnx"
    for p in (a, b):
        p.parent.mkdir()
        p.write_bytes(b"same")
    assert file_item(a).sha256 == file_item(b).sha256
    b.write_bytes(b"other")
    assert file_item(a).sha256 != file_item(b).sha256


def test_remote_argv_maps_labels_factories_and_paths(tmp_path):
    from mmdeploy_kit.remote.bench import _Plan

    (tmp_path / "q").mkdir()
    (tmp_path / "q" / "vision.onnx").write_bytes(b"onnx")
    (tmp_path / "models.py").write_text("def factory():\n    pass\n")
    plan = _Plan()
    plan.model(f"int8={tmp_path / 'q'}")
    plan.model(f"{tmp_path / 'models.py'}:factory", "--reference")
    plan.model("my_pkg.models:factory")           # not a local path: passed through for the device to import
    args = plan.resolve("/home/nvidia/.cache/mmdeploy_kit/remote")
    q, py = plan.items
    assert args[0] == f"int8=/home/nvidia/.cache/mmdeploy_kit/remote/{q.sha256}/q"
    assert args[1:3] == ["--reference", f"/home/nvidia/.cache/mmdeploy_kit/remote/{py.sha256}/models.py:factory"]
    assert args[3] == "my_pkg.models:factory"
    assert plan.back[f"/home/nvidia/.cache/mmdeploy_kit/remote/{q.sha256}/q"] == str(tmp_path / "q")


def test_stale_run_and_staging_folders_are_cleaned(server, tmp_path):
    import os
    import sys
    import time

    from mmdeploy_kit.remote.session import RemoteSession

    cache = server.home / ".cache" / "mmdeploy_kit" / "remote"
    old, fresh, staging = cache / "runs" / "old", cache / "runs" / "fresh", cache / ".incoming-abc"
    keep = cache / ("a" * 64)
    for d in (old, fresh, staging, keep):
        d.mkdir(parents=True)
    day_ago = time.time() - 2 * 86400
    for d in (old, staging, keep):
        os.utime(d, (day_ago, day_ago))
    opts = (f"UserKnownHostsFile={server.known_hosts}", "GlobalKnownHostsFile=/dev/null")
    RemoteSession(SshTarget(server.host, key=str(server.client_key), options=opts),
                  remote_mmdk=str(Path(sys.executable).with_name("mmdk"))).connect()
    assert not old.exists() and not staging.exists() and fresh.exists() and keep.exists()
