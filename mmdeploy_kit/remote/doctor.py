"""``mmdk doctor --host``: the device's own ``mmdk doctor --json`` over SSH, after the version check."""

from __future__ import annotations

import json
from typing import Any, Optional

from ..errors import RemoteError
from .session import RemoteSession, remote_failure
from .ssh import SshTarget


def remote_doctor(host: str, ssh_key: Optional[str] = None, ssh_options: tuple[str, ...] = (),
                  accept_new_host_key: bool = False, remote_mmdk: str = "mmdk") -> dict[str, Any]:
    """``mmdk doctor --json`` run by the device's own mmdk over SSH (version checked first)."""
    session = RemoteSession(SshTarget(host=host, key=ssh_key, options=tuple(ssh_options),
                                      accept_new_host_key=accept_new_host_key), remote_mmdk=remote_mmdk)
    probe = session.connect()
    rc, files, err = session.run_mmdk(["doctor", "--json"], what="doctor", outputs=["stdout.txt"])
    if rc != 0:
        raise remote_failure(host, rc, err, "doctor")
    try:
        info = json.loads(files.get("stdout.txt", b"").decode())
    except ValueError:
        raise RemoteError(f"{host}: `mmdk doctor --json` on the device printed no JSON") from None
    resolved = session.ssh.resolved()
    info["remote"] = {"host": host, "address": probe.address or f"{resolved.get('hostname')}:{resolved.get('port')}",
                      "mmdk": f"{remote_mmdk} {probe.mmdk_version}"}
    return info
