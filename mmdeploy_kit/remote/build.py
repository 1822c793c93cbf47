"""``mmdk build-engines BUNDLE --host H``: build a deferred TensorRT bundle on the device it is meant for (engines
are tied to the GPU and TensorRT version), then bring the built bundle back and publish it atomically here.

The bundle is copied into the device's content-addressed cache, the device's own mmdk builds and verifies the
engines into a run folder, and that folder comes back as one tar stream. Failures are one line; nothing local
changes unless the whole built bundle arrived.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from ..errors import RemoteError, UserInputError
from .cache import dir_item
from .session import RemoteSession, remote_failure
from .ssh import SshTarget


def remote_build_engines(host: str, bundle: str | Path, out: Optional[str | Path] = None, *,
                         min_cosine: Optional[float] = None, overwrite: bool = False,
                         progress: Optional[Callable[[str], None]] = None, ssh_key: Optional[str] = None,
                         ssh_options: Sequence[str] = (), accept_new_host_key: bool = False,
                         remote_mmdk: str = "mmdk") -> Any:
    """Returns the built bundle's Manifest (written to ``out``, or in place of ``bundle``)."""
    from ..artifacts import Manifest, atomic_output_dir

    bundle = Path(bundle)
    if not bundle.is_dir():
        raise UserInputError(f"bundle {bundle} is not a directory",
                             hint="write one with: mmdk export MODEL --target tensorrt --build defer -o BUNDLE")
    target = Path(out) if out is not None else bundle
    in_place = target.resolve() == bundle.resolve()
    if not in_place and target.is_dir() and any(target.iterdir()) and not overwrite:
        raise UserInputError(f"output directory {target} is not empty", hint="pass --overwrite or choose another -o")
    log = progress or (lambda _m: None)
    item = dir_item(bundle.resolve(), local=str(bundle))
    session = RemoteSession(SshTarget(host=host, key=ssh_key, options=tuple(ssh_options),
                                      accept_new_host_key=accept_new_host_key), remote_mmdk=remote_mmdk, log=log)
    probe = session.connect([item])
    session.upload([item])
    run_dir = session.new_run_dir()
    args = ["build-engines", item.remote_path(probe.cache_dir), "-o", f"{run_dir}/out"]
    if min_cosine is not None:
        args += ["--min-cosine", str(min_cosine)]
    log(f"{host}: building the engines on the device (mmdk {probe.mmdk_version})")
    try:
        rc, _files, err = session.run_mmdk(args, what="engine build", run_dir=run_dir, keep=True,
                                           forward=lambda ln: log(f"[{host}] {ln}"))
        if rc != 0:
            raise remote_failure(host, rc, err, "engine build")
        with atomic_output_dir(target, overwrite=overwrite or in_place) as tmp:
            n = session.fetch_dir(f"{run_dir}/out", tmp, what="built bundle")
            if n == 0 or not (tmp / "mmdk_manifest.json").is_file():
                raise RemoteError(f"{host}: the device's engine build returned no bundle")
        log(f"{host}: {n} file(s) of the built bundle brought back into {target}")
    finally:
        try:
            session.remove(run_dir)
        except RemoteError:
            pass  # the device is gone; the run folder stays in its cache
    return Manifest.read(target)
