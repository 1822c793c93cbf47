"""``mmdk bench ... --host H``: benchmark on a device over SSH and bring the report home.

1. Every local input (artifacts, ``--reference``, ``--data`` with its media, ``--processor``, ``--weights``,
   ``--io``) becomes a content-addressed item; one SSH call checks the device's mmdk version, its free disk and
   which items it already has; the missing ones are copied (``remote/cache.py``).
2. The device's own ``mmdk bench`` runs on the copies with the same options and ``--report`` into a run folder
   (``remote/session.py``: it dies with the connection, so Ctrl-C here stops it there).
3. The JSON report comes back, its device paths are mapped back to the paths given here, the environment
   records the host (alias as given + the address reached), and every requested format is rendered here.
   Any failure is one line and writes no local report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from ..errors import RemoteError, UserInputError
from .cache import Item, dir_item, manifest_item, path_item
from .session import RemoteSession, remote_failure
from .ssh import SshTarget

Log = Callable[[str], None]
_TIMING_FLAGS = {"warmup_runs": "--warmup", "min_runs": "--min-runs", "min_time_s": "--min-time",
                 "min_rounds": "--min-rounds", "max_time_s": "--max-time", "clock": "--clock",
                 "processes": "--processes", "precision": "--precision"}


class _Plan:
    """Remote argv being built, the items to copy, and remote path -> local path for the report."""

    def __init__(self) -> None:
        self.items: list[Item] = []
        self.args: list[str] = []
        self.back: dict[str, str] = {}
        self._pending: list[tuple[str, Item, str]] = []   # (placeholder, item, path inside the item)

    def add_item(self, item: Item, suffix: str = "") -> str:
        """A placeholder for the item's path on the device (known once the remote home is)."""
        token = f"\0item{len(self._pending)}\0"
        self.items.append(item)
        self._pending.append((token, item, suffix))
        return token

    def resolve(self, cache_dir: str) -> list[str]:
        out = list(self.args)
        for token, item, suffix in self._pending:
            remote = f"{cache_dir}/{item.sha256}/{suffix or item.name}"
            out = [a.replace(token, remote) for a in out]
            self.back[remote] = item.local
        return out

    def model(self, spec: Any, flag: Optional[str] = None) -> None:
        """An artifact / reference argument: ``[LABEL=]PATH`` or ``file.py:factory`` (copied), else passed as is."""
        if not isinstance(spec, (str, Path)):
            raise UserInputError("--host needs paths, not loaded models", hint="pass the checkpoint's path")
        from ..runtime.harness import split_label

        label, src = split_label(str(spec))
        text = str(src)
        path, factory = Path(text), ""
        if not path.exists() and ":" in path.name:
            head, _, factory = text.rpartition(":")
            path = Path(head)
        if flag:
            self.args.append(flag)
        if not path.exists():
            self.args.append(str(spec))  # e.g. a package.module:factory installed on the device
            return
        local = text.rpartition(":")[0] if factory else text
        item = path_item(path.resolve(), local=local.rstrip("/") or local)
        self.args.append(f"{label + '=' if label else ''}{self.add_item(item)}{':' + factory if factory else ''}")

    def file(self, flag: str, value: Optional[str | Path], what: str) -> None:
        if value is None:
            return
        p = Path(value)
        if not p.exists():
            raise UserInputError(f"{what} {p} does not exist")
        self.args += [flag, self.add_item(path_item(p.resolve(), local=str(value)))]


def _processor_from_manifests(paths: Sequence[Any]) -> Optional[Path]:
    """The tokenizer/processor dir an export's manifest points back to (``source.hf_dir``), if it exists here."""
    from ..artifacts import MANIFEST_NAME, Manifest
    from ..runtime.harness import split_label

    for spec in paths:
        p = Path(str(split_label(str(spec))[1]))
        if (p / "config.json").is_file():
            return None  # an HF dir: the device finds the processor in its copy
        if p.is_dir() and (p / MANIFEST_NAME).is_file():
            try:
                hf = Manifest.read(p).source.get("hf_dir")
            except UserInputError:
                continue
            if hf and Path(hf).is_dir():
                return Path(hf)
    return None


def remote_bench(host: str, artifacts: Sequence[Any], reference: Any = None, *, target: str = "cpu",
                 backend: str = "auto", batch: Optional[Sequence[int]] = None, seq: Optional[Sequence[int]] = None,
                 towers: Sequence[str] = (), data: Optional[str | Path] = None, data_limit: Optional[int] = None,
                 templates: Optional[Sequence[str]] = None, processor: Optional[str | Path] = None,
                 threads: Optional[int] = None, timing: Optional[dict[str, Any]] = None,
                 max_latency_regression: Optional[float | str] = None, max_accuracy_drop: Optional[float] = None,
                 quiet: bool = False, progress: Optional[Log] = None, ssh_key: Optional[str] = None,
                 ssh_options: Sequence[str] = (), accept_new_host_key: bool = False, remote_mmdk: str = "mmdk",
                 weights: Optional[str | Path] = None, io: Optional[str | Path] = None,
                 trust_remote_code: bool = False, force: bool = False, **unknown: Any) -> Any:
    """Run the benchmark on ``host`` and return its ``BenchReport`` (not yet written locally). The device's mmdk
    runs it through its own pipeline runner and step cache; ``force`` (``--force``) measures again there."""
    from ..runtime.env import RemoteHost
    from ..runtime.schema import BenchReport

    if unknown:
        raise UserInputError(f"option {sorted(unknown)[0]!r} is not supported with --host")
    from ..runtime.targets import BACKEND_CHOICES, get_target

    get_target(target)  # a typo is a local one-line error, before any connection
    if backend not in BACKEND_CHOICES:
        raise UserInputError(f"unknown backend {backend!r}", hint=f"choose one of {', '.join(BACKEND_CHOICES)}")
    log = progress if (progress and not quiet) else (lambda _m: None)
    plan = _Plan()
    plan.args.append("bench")
    for a in artifacts:
        plan.model(a)
    if reference is not None:
        plan.model(reference, "--reference")
    if data is not None:
        item, inner = manifest_item(Path(data))
        item.local = str(data)
        plan.args += ["--data", plan.add_item(item, inner)]
        if processor is None:
            proc = _processor_from_manifests([*([reference] if reference is not None else []), *artifacts])
            if proc is not None:  # tokenizer / image processor files only, not the weights
                plan.args += ["--processor", plan.add_item(dir_item(proc.resolve(), local=str(proc), skip_weights=True))]
    plan.file("--processor", processor, "processor directory")
    plan.file("--weights", weights, "weights file")
    plan.file("--io", io, "I/O spec")
    plan.args += ["--target", target, "--backend", backend]
    if batch:
        plan.args += ["--batch", ",".join(str(b) for b in batch)]
    if seq:
        plan.args += ["--seq", ",".join(str(s) for s in seq)]
    for t in towers:
        plan.args += ["--tower", t]
    if data_limit:
        plan.args += ["--data-limit", str(data_limit)]
    for t in templates or ():
        plan.args += ["--template", t]
    if threads:
        plan.args += ["--threads", str(threads)]
    for key, value in (timing or {}).items():
        if value is None:
            continue
        if key not in _TIMING_FLAGS:
            raise UserInputError(f"timing option {key!r} cannot be passed to a remote bench",
                                 hint=f"use {', '.join(_TIMING_FLAGS)}")
        plan.args += [_TIMING_FLAGS[key], str(value)]
    if max_latency_regression is not None:
        plan.args += ["--max-latency-regression", str(max_latency_regression)]
    if max_accuracy_drop is not None:
        plan.args += ["--max-accuracy-drop", str(max_accuracy_drop)]
    if trust_remote_code:
        plan.args.append("--trust-remote-code")
    if force:
        plan.args.append("--force")
    plan.args += ["--report", "{run}/report.json", "--quiet"]

    target_ = SshTarget(host=host, key=ssh_key, options=tuple(ssh_options), accept_new_host_key=accept_new_host_key)
    session = RemoteSession(target_, remote_mmdk=remote_mmdk, log=log)
    log(f"{host}: hashing {len(plan.items)} input(s)")
    probe = session.connect(plan.items)
    session.upload(plan.items)
    args = plan.resolve(probe.cache_dir)
    log(f"{host}: running mmdk {probe.mmdk_version} bench on the device")
    rc, files, err = session.run_mmdk(args, what="benchmark", outputs=["report.json"],
                                      forward=None if quiet else (lambda ln: ln.startswith("warning:") or log(f"[{host}] {ln}")))
    raw = files.get("report.json")
    if rc != 0 and not (rc == 1 and raw):  # exit 1 with a report: gates failed, reported as such
        raise remote_failure(host, rc, err, "benchmark")
    if not raw:
        raise RemoteError(f"{host}: the remote benchmark finished but wrote no report", hint="rerun with --debug")
    text = raw.decode("utf-8")
    for remote, local in sorted(plan.back.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(_json_str(remote), _json_str(local))
    try:
        report = BenchReport.model_validate_json(text)
    except ValueError as exc:
        raise RemoteError(f"{host}: the report from the device does not match this mmdk's schema ({str(exc)[:160]})",
                          hint="install the same mmdk version on both sides") from None
    resolved = session.ssh.resolved()
    address = probe.address or f"{resolved.get('hostname', target_.destination)}:{resolved.get('port', '22')}"
    report.environment.remote = RemoteHost(host=host, address=address, user=resolved.get("user"),
                                           mmdk=f"{remote_mmdk} {probe.mmdk_version}")
    report.warnings.append(f"ran on {host} ({address}) over SSH; {len(session.transferred)} input(s) copied, "
                           f"{len(set(i.sha256 for i in plan.items)) - len(session.transferred)} from the device cache")
    return report


def _json_str(s: str) -> str:
    import json

    return json.dumps(s)[1:-1]
