"""`mmdk doctor --host` against the loopback SSH server: the device's own mmdk answers, the host is recorded."""

from __future__ import annotations

import json
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


def test_remote_doctor(server, mmdk):
    args = ["--host", server.host, *server.ssh_args(), "--remote-mmdk", str(MMDK)]
    res = mmdk("doctor", "--json", *args)
    assert res.code == 0, res.err
    info = json.loads(res.out)
    assert info["remote"] == {"host": server.host, "address": f"127.0.0.1:{server.port}", "mmdk": f"{MMDK} 0.1.0"}
    assert info["features"] and info["cpu"]["model"]
    res = mmdk("doctor", *args)
    assert res.code == 0 and f"mmdk doctor on {server.host} (127.0.0.1:{server.port})" in res.out
    assert not server.uploads()


def test_remote_doctor_missing_mmdk(server, mmdk):
    res = mmdk("doctor", "--host", server.host, *server.ssh_args(), "--remote-mmdk", "/nope/mmdk")
    assert res.code == 7 and res.one_line_error() and "pip install" in res.err
