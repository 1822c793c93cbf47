"""The SSH transport: the system OpenSSH client, so ``~/.ssh/config`` aliases, the agent, ``-i KEY`` and ports
work as they do for the user. Host keys are checked (``StrictHostKeyChecking=yes``; ``accept-new`` only when
asked), ``BatchMode=yes`` (never a password prompt), keep-alives detect a dead link or a rebooted device.

Every failure becomes one :class:`~mmdeploy_kit.errors.RemoteError` line (exit 7).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from typing import IO, Callable, Optional, Sequence

from ..errors import RemoteError

SSH_FAILED = 255  # ssh's own exit status for connection-level failures


@dataclass(frozen=True)
class SshTarget:
    """``--host USER@HOST[:PORT]`` (or an ssh_config alias) plus the user's ssh options."""

    host: str                                   # as the user gave it
    key: Optional[str] = None                   # --ssh-key
    options: tuple[str, ...] = ()               # --ssh-option Key=Value (repeatable)
    accept_new_host_key: bool = False
    connect_timeout_s: int = 15
    alive_interval_s: int = 5
    alive_count: int = 3
    executable: str = "ssh"

    @property
    def destination(self) -> str:
        return split_host(self.host)[0]

    @property
    def port(self) -> Optional[int]:
        return split_host(self.host)[1]


def split_host(host: str) -> tuple[str, Optional[int]]:
    """``user@host:2222`` -> (``user@host``, 2222); ``[::1]:22`` -> (``::1``, 22); an alias -> (alias, None)."""
    host = host.strip()
    if not host or any(c.isspace() for c in host) or host.startswith("-"):
        raise RemoteError(f"--host {host!r} is not a host", hint="use USER@HOST[:PORT] or an alias from ~/.ssh/config")
    user, at, rest = host.rpartition("@")
    prefix = f"{user}@" if at else ""
    m = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?", rest)
    if m:
        return prefix + m.group(1), int(m.group(2)) if m.group(2) else None
    if rest.count(":") == 1:
        name, port = rest.split(":")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise RemoteError(f"--host {host!r}: port {port!r} is not a number 1-65535")
        return prefix + name, int(port)
    return host, None


class Ssh:
    def __init__(self, target: SshTarget):
        self.target = target
        if shutil.which(target.executable) is None:
            raise RemoteError(f"the OpenSSH client ({target.executable}) is not installed on this machine",
                              hint="install it (Debian/Ubuntu: apt-get install openssh-client)")

    # ---- command lines ------------------------------------------------------------------------------------
    def _options(self) -> list[str]:
        t = self.target
        # ssh keeps the FIRST value of each option: the user's --ssh-option go first so they can override ours
        argv: list[str] = []
        for opt in t.options:
            if "=" not in opt and " " not in opt.strip():
                raise RemoteError(f"--ssh-option {opt!r} is not KEY=VALUE", hint="e.g. --ssh-option ProxyJump=bastion")
            argv += ["-o", opt]
        if t.key:
            argv += ["-i", t.key, "-o", "IdentitiesOnly=yes"]
        if t.port:
            argv += ["-p", str(t.port)]
        argv += ["-o", "BatchMode=yes",
                 "-o", f"StrictHostKeyChecking={'accept-new' if t.accept_new_host_key else 'yes'}",
                 "-o", f"ConnectTimeout={t.connect_timeout_s}",
                 "-o", f"ServerAliveInterval={t.alive_interval_s}", "-o", f"ServerAliveCountMax={t.alive_count}",
                 "-o", "LogLevel=ERROR"]
        return argv

    def argv(self, remote_command: str) -> list[str]:
        return [self.target.executable, *self._options(), "-T", self.target.destination, "--", remote_command]

    def resolved(self) -> dict[str, str]:
        """``ssh -G``: the effective user/hostname/port after ~/.ssh/config (no connection is made)."""
        try:
            res = subprocess.run([self.target.executable, *self._options(), "-G", self.target.destination],
                                 capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError):
            return {}
        out: dict[str, str] = {}
        for line in res.stdout.splitlines():
            key, _, value = line.partition(" ")
            if key in ("user", "hostname", "port") and key not in out:
                out[key] = value.strip()
        return out

    # ---- running ------------------------------------------------------------------------------------------
    def run(self, remote_command: str, input: Optional[bytes] = None, timeout: Optional[float] = 120,
            what: str = "command") -> subprocess.CompletedProcess:
        """Run and capture; a connection-level failure raises RemoteError, any other exit status is returned."""
        try:
            res = subprocess.run(self.argv(remote_command), input=input if input is not None else b"",
                                 capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RemoteError(f"{self.target.host}: the remote {what} did not finish within {timeout:.0f} s",
                              hint="check the device and the network") from None
        if res.returncode == SSH_FAILED:
            raise connection_error(self.target.host, res.stderr.decode(errors="replace"), started=False, what=what)
        return res

    def popen(self, remote_command: str, stdout: int | IO = subprocess.PIPE) -> subprocess.Popen:
        return subprocess.Popen(self.argv(remote_command), stdin=subprocess.PIPE, stdout=stdout,
                                stderr=subprocess.PIPE)


@dataclass
class StderrTail:
    """Reads a process's stderr in a thread: forwards each line to ``sink`` and keeps the last ones."""

    stream: IO[bytes]
    sink: Optional[Callable[[str], None]] = None
    keep: int = 60
    lines: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for raw in iter(self.stream.readline, b""):
            for line in raw.decode(errors="replace").replace("\r", "\n").splitlines():
                if not line.strip():
                    continue
                self.lines = (self.lines + [line])[-self.keep:]
                if self.sink is not None:
                    self.sink(line)

    def join(self, timeout: float = 5.0) -> str:
        self.thread.join(timeout)
        return "\n".join(self.lines)


_PATTERNS: Sequence[tuple[str, str, str]] = (
    (r"Host key verification failed|host key is known|REMOTE HOST IDENTIFICATION HAS CHANGED",
     "the host key of {host} is not known or does not match (host keys are checked)",
     "check the device's fingerprint, then connect once with `ssh {host}` or rerun with --accept-new-host-key "
     "(a changed key means a reinstalled device or an attack: remove the old one with ssh-keygen -R)"),
    (r"Permission denied", "{host} refused the login (no password prompts: key or agent authentication only)",
     "load your key into ssh-agent or pass --ssh-key KEY, and add its .pub to ~/.ssh/authorized_keys on the device"),
    (r"Could not resolve hostname|Name or service not known|nodename nor servname",
     "cannot resolve the address of {host}", "check the name, or use its IP address or an ~/.ssh/config alias"),
    (r"Connection refused", "{host} refused the SSH connection", "is sshd running on the device, on that port?"),
    (r"Connection timed out|Operation timed out|No route to host|Network is unreachable",
     "{host} cannot be reached", "is the device on and on the network?"),
    (r"Timeout, server .* not responding|Connection reset|Broken pipe|closed by remote host|Connection closed|"
     r"connection lost|client_loop",
     "the connection to {host} was lost", "the device rebooted or the network dropped; rerun when it is back"),
)


def connection_error(host: str, stderr: str, started: bool, what: str = "command") -> RemoteError:
    """One line for an ``ssh`` exit status 255, from its stderr."""
    for pattern, msg, hint in _PATTERNS:
        if re.search(pattern, stderr, re.I):
            text = msg.format(host=host)
            if started and "lost" in msg:
                text += f" during the {what}; nothing was written here"
            return RemoteError(text, hint=hint.format(host=host))
    last = next((ln.strip() for ln in reversed(stderr.splitlines()) if ln.strip()), "no message")
    if started:
        return RemoteError(f"the connection to {host} was lost during the {what} ({last[:200]}); nothing was written "
                           "here", hint="the device rebooted or the network dropped; rerun when it is back")
    return RemoteError(f"ssh to {host} failed: {last[:200]}", hint=f"try `ssh {host} true` to see why")


def quote(args: Sequence[str]) -> str:
    return " ".join(shlex.quote(str(a)) for a in args)
