"""One remote device session: probe (address, home, disk, the device's mmdk and its version, which items it
has cached) in a single SSH call, upload what is missing, run the device's own ``mmdk`` so that losing the
connection or a local Ctrl-C kills it, and read files back."""

from __future__ import annotations

import re
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from .. import __version__
from ..errors import MmdkError, RemoteError
from .cache import CACHE_REL, Item, free_bytes_from_df, human_mb, upload_script, write_tar
from .ssh import SSH_FAILED, Ssh, SshTarget, StderrTail, connection_error, quote

Log = Callable[[str], None]
INSTALL_HINT = ("on the device: python3 -m pip install 'mmdeploy_kit[onnx]=={v}' (JetPack 6 ships Python 3.10: "
                "use its python3.10; for TensorRT use the JetPack tensorrt package), or pass --remote-mmdk PATH")


@dataclass
class Probe:
    home: str
    address: Optional[str]
    mmdk_version: str
    free_bytes: Optional[int]
    cached: set[str] = field(default_factory=set)

    @property
    def cache_dir(self) -> str:
        return f"{self.home}/{CACHE_REL}"


class RemoteCommandError(RemoteError):
    """The device's mmdk reported an error: its message, prefixed with the host, and its own exit code."""

    def __init__(self, message: str, hint: Optional[str], exit_code: int):
        super().__init__(message, hint)
        self.exit_code = exit_code


class RemoteSession:
    def __init__(self, target: SshTarget, remote_mmdk: str = "mmdk", log: Optional[Log] = None):
        self.target = target
        self.ssh = Ssh(target)
        self.remote_mmdk = remote_mmdk
        self.log = log or (lambda _m: None)
        self.transferred: list[Item] = []
        self.probe: Optional[Probe] = None

    @property
    def host(self) -> str:
        return self.target.host

    def _env(self) -> str:
        # non-interactive ssh shells skip ~/.profile, so a `pip install --user` mmdk in ~/.local/bin is off PATH
        return 'PATH="$HOME/.local/bin:$PATH"; export PATH; '

    # ---- probe + version check ------------------------------------------------------------------------------
    def connect(self, items: Sequence[Item] = ()) -> Probe:
        mmdk = quote([self.remote_mmdk])
        hashes = " ".join(i.sha256 for i in items)
        script = (self._env() + 'echo "home=$HOME"; echo "conn=${SSH_CONNECTION:-}"; '
                  f'v=$({mmdk} --version 2>&1); echo "mmdk_rc=$?"; echo "mmdk=$v" | head -n 1; '
                  f'mkdir -p "$HOME/{CACHE_REL}" 2>/dev/null; echo "df=$(df -Pk "$HOME/{CACHE_REL}" | tail -n 1)"; '
                  f'for h in {hashes}; do [ -d "$HOME/{CACHE_REL}/$h" ] && echo "have=$h"; done; '
                  # run folders left by lost connections, staging folders of interrupted copies: gone after a day
                  f'find "$HOME/{CACHE_REL}" "$HOME/{CACHE_REL}/runs" -mindepth 1 -maxdepth 1 -mmin +1440 '
                  '\\( -name ".incoming-*" -o -path "*/runs/*" \\) -exec rm -rf {} + 2>/dev/null; true')
        res = self.ssh.run(script, what="probe", timeout=60)
        out = res.stdout.decode(errors="replace")
        vals: dict[str, list[str]] = {}
        for line in out.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                vals.setdefault(key, []).append(value)
        if "home" not in vals:
            raise RemoteError(f"{self.host}: the remote shell did not answer as expected "
                              f"({(res.stderr.decode(errors='replace') or out).strip()[:200]})",
                              hint="the device needs a POSIX login shell (sh/bash)")
        rc = int((vals.get("mmdk_rc") or ["1"])[0])
        text = (vals.get("mmdk") or [""])[0].strip()
        want = __version__
        if rc == 127 or "not found" in text:
            raise RemoteError(f"{self.host}: the device has no {self.remote_mmdk!r} command (mmdeploy_kit is not "
                              "installed there, or not on the PATH of non-interactive SSH shells)",
                              hint=INSTALL_HINT.format(v=want))
        m = re.search(r"(\d+\.\d+\.\d+\S*)", text)
        if rc != 0 or m is None:
            raise RemoteError(f"{self.host}: `{self.remote_mmdk} --version` failed ({text[:120] or f'exit {rc}'}): "
                              f"that mmdk is older than {want} or broken", hint=INSTALL_HINT.format(v=want))
        if m.group(1) != want:
            raise RemoteError(f"{self.host} has mmdk {m.group(1)}, this machine has {want}: both sides must run the "
                              "same version (report schema, options)", hint=INSTALL_HINT.format(v=want))
        conn = (vals.get("conn") or [""])[0].split()
        address = f"{conn[2]}:{conn[3]}" if len(conn) == 4 else None
        self.probe = Probe(home=vals["home"][0], address=address, mmdk_version=m.group(1),
                           free_bytes=free_bytes_from_df((vals.get("df") or [""])[0]), cached=set(vals.get("have", [])))
        return self.probe

    # ---- copy ------------------------------------------------------------------------------------------------
    def upload(self, items: Sequence[Item]) -> list[Item]:
        """Copy the items the device does not have yet (one tar stream); returns those copied."""
        assert self.probe is not None
        unique = {i.sha256: i for i in items}
        missing = [i for h, i in unique.items() if h not in self.probe.cached]
        if not missing:
            self.log(f"{self.host}: all {len(unique)} input(s) already in the device cache; nothing to copy")
            return []
        need = sum(i.size for i in missing)
        free = self.probe.free_bytes
        if free is not None and need > free:
            raise RemoteError(f"{self.host}: not enough disk space for the inputs ({human_mb(need)} needed, "
                              f"{human_mb(free)} free in ~/{CACHE_REL})",
                              hint=f"free space on the device, or clear old entries: rm -rf ~/{CACHE_REL}/*")
        self.log(f"{self.host}: copying {len(missing)} input(s), {human_mb(need)} "
                 f"({len(unique) - len(missing)} already cached)")
        staging = f".incoming-{uuid.uuid4().hex[:12]}"
        proc = self.ssh.popen(upload_script(self.probe.cache_dir, [i.sha256 for i in missing], staging),
                              stdout=subprocess.DEVNULL)
        tail = StderrTail(proc.stderr)  # type: ignore[arg-type]
        try:
            write_tar(missing, proc.stdin)  # type: ignore[arg-type]
            proc.stdin.close()  # type: ignore[union-attr]
        except BrokenPipeError:
            pass
        except BaseException:
            proc.kill()
            raise
        rc = proc.wait()
        err = tail.join()
        if rc != 0:
            if re.search(r"No space left on device|Disk quota exceeded", err, re.I):
                raise RemoteError(f"{self.host}: the device ran out of disk space while copying the inputs "
                                  f"({human_mb(need)}); nothing was run", hint=f"free space on the device (rm -rf "
                                  f"~/{CACHE_REL}/* clears the mmdk copy cache)")
            if rc == SSH_FAILED:
                raise connection_error(self.host, err, started=True, what="copy")
            last = next((ln for ln in reversed(err.splitlines()) if ln.strip()), f"exit {rc}")
            raise RemoteError(f"{self.host}: copying the inputs failed: {last[:200]}")
        self.probe.cached.update(i.sha256 for i in missing)
        self.transferred += missing
        return missing

    # ---- run -------------------------------------------------------------------------------------------------
    def run_mmdk(self, args: Sequence[str], what: str, outputs: Sequence[str] = (),
                 forward: Optional[Log] = None, run_dir: Optional[str] = None,
                 keep: bool = False) -> tuple[int, dict[str, bytes], str]:
        """Run ``mmdk ARGS`` on the device in a fresh run folder (``{run}`` in args is replaced by its path).
        The remote process dies when the SSH connection closes (Ctrl-C here, a lost link): a watcher reads the
        session's stdin, which this side keeps open, and kills mmdk at EOF. Returns (exit code, the requested
        output files read back, stderr tail); the run folder is removed."""
        run_dir = run_dir or self.new_run_dir()
        argv = quote([self.remote_mmdk, *[a.replace("{run}", run_dir) for a in args]])
        script = (self._env() + f'R="{run_dir}"; mkdir -p "$R" || exit 96; exec 3<&0; '
                  f'{argv} </dev/null >"$R/stdout.txt" & pid=$!; echo $pid >"$R/pid"; '
                  '( while read -r _ <&3; do :; done; kill -TERM $pid 2>/dev/null; sleep 5; '
                  'kill -KILL $pid 2>/dev/null ) <&3 >/dev/null 2>&1 & w=$!; '
                  'wait $pid; rc=$?; kill $w 2>/dev/null; exit $rc')
        proc = self.ssh.popen(script, stdout=subprocess.DEVNULL)
        tail = StderrTail(proc.stderr, sink=forward)  # type: ignore[arg-type]
        try:
            rc = proc.wait()
        except KeyboardInterrupt:
            self.log(f"interrupted: stopping the remote {what} on {self.host}")
            _hang_up(proc)
            raise
        err = tail.join()
        if rc == SSH_FAILED:
            raise connection_error(self.host, err, started=True, what=what)
        files = self.fetch(run_dir, outputs, keep=keep)
        return rc, files, err

    def fetch(self, run_dir: str, names: Sequence[str], keep: bool = False) -> dict[str, bytes]:
        """Read small files of a run folder back (length-prefixed), then delete the folder (unless ``keep``)."""
        parts = "; ".join(f'if [ -f "$R/{n}" ]; then echo "{n} $(wc -c <"$R/{n}")"; cat "$R/{n}"; fi' for n in names)
        cleanup = "" if keep else '; rm -rf "$R"'
        res = self.ssh.run(f'R="{run_dir}"; {parts or "true"}{cleanup}', what="report download", timeout=120)
        data = res.stdout
        out: dict[str, bytes] = {}
        pos = 0
        while pos < len(data):
            nl = data.index(b"\n", pos)
            name, size = data[pos:nl].decode().rsplit(" ", 1)
            start = nl + 1
            out[name] = data[start:start + int(size)]
            pos = start + int(size)
        return out


    def fetch_dir(self, remote_dir: str, into: "Path", what: str = "outputs") -> int:
        """Stream ``remote_dir`` back as tar and extract it into the (empty, local) ``into``; the remote folder
        is left in place (callers remove their run folder). Returns the number of files."""
        import tarfile

        proc = self.ssh.popen(f'tar -cf - -C "{remote_dir}" .')
        tail = StderrTail(proc.stderr)  # type: ignore[arg-type]
        count = 0
        try:
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:  # type: ignore[arg-type]
                for member in tar:
                    name = Path(member.name)
                    if name.is_absolute() or ".." in name.parts or not (member.isfile() or member.isdir()):
                        raise RemoteError(f"{self.host}: refusing unsafe path {member.name!r} in the returned {what}")
                    tar.extract(member, into, set_attrs=False)
                    count += member.isfile()
        except tarfile.TarError as exc:
            proc.kill()
            rc = proc.wait()
            err = tail.join()
            if rc == SSH_FAILED:
                raise connection_error(self.host, err, started=True, what=f"{what} download") from None
            raise RemoteError(f"{self.host}: downloading the {what} failed ({exc})") from None
        rc = proc.wait()
        err = tail.join()
        if rc == SSH_FAILED:
            raise connection_error(self.host, err, started=True, what=f"{what} download")
        if rc != 0:
            raise RemoteError(f"{self.host}: downloading the {what} failed: {err.strip()[-200:] or f'exit {rc}'}")
        return count

    def remove(self, remote_dir: str) -> None:
        self.ssh.run(f'rm -rf "{remote_dir}"', what="cleanup", timeout=60)

    def new_run_dir(self) -> str:
        assert self.probe is not None
        return f"{self.probe.cache_dir}/runs/{uuid.uuid4().hex[:16]}"


def _hang_up(proc: subprocess.Popen) -> None:
    """Close our end of the session's stdin (the remote watcher then kills mmdk), then end ssh."""
    try:
        if proc.stdin:
            proc.stdin.close()
    except OSError:
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()


def remote_failure(host: str, rc: int, stderr: str, what: str) -> MmdkError:
    """The error for a non-zero exit of the remote mmdk (its own one-line error, with its exit code)."""
    err_line = next((ln for ln in reversed(stderr.splitlines()) if ln.startswith("error:")), None)
    if rc in (130, 143, 137) or rc > 128:
        sig = rc - 128
        why = "interrupted" if rc == 130 else f"killed by signal {sig}" + (" (out of memory?)" if sig == 9 else "")
        return RemoteError(f"{host}: the remote {what} was {why}; nothing was written here",
                           hint="check the device (dmesg for the OOM killer) and rerun")
    if err_line:
        msg = err_line[len("error:"):].strip()
        hint = None
        m = re.match(r"(.*) \(hint: (.*)\)$", msg)
        if m:
            msg, hint = m.group(1), m.group(2)
        return RemoteCommandError(f"on {host}: {msg}", hint, exit_code=rc)
    last = next((ln.strip() for ln in reversed(stderr.splitlines()) if ln.strip()), f"exit status {rc}")
    return RemoteCommandError(f"on {host}: the remote {what} failed: {last[:200]}", None, exit_code=rc)

