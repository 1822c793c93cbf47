"""One rank of a distributed distillation: ``python -m torch.distributed.run ... -m mmdeploy_kit.passes.distill_worker JOB``.

Every rank loads the student and the teacher from their paths (JOB, written by the distill pass), joins the
process group and runs the same loop; rank 0 writes the trained weights (``student.safetensors``) and the
figures (``result.json``) to the job's ``out`` folder. An error is written to ``<JOB>.error.json`` for the
launcher to re-raise as the same one-line message.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(job_path: str) -> int:
    from ..errors import MmdkError
    from ..train import dist

    job_file = Path(job_path)
    try:
        job = json.loads(job_file.read_text())
        info = dist.init_from_env()
        from ..model.loaders import load
        from ..train.checkpoint import flat_state
        from ..train.run import run_distillation
        from ..train.save import single_root, student_modules
        from .distill import DistillConfig

        student = single_root(load(job["student"], **job.get("student_load_options", {})))
        teacher = single_root(load(job["teacher"], **job.get("teacher_load_options", {})))
        config = DistillConfig(**job["config"])
        ckpt = Path(job["checkpoint_dir"]) if job.get("checkpoint_dir") else None
        result = run_distillation(student, teacher, config, checkpoint_dir=ckpt, resume=job.get("resume", False),
                                  quiet=job.get("quiet", False))
        if info.main:
            from safetensors.torch import save_file

            out = Path(job["out"])
            state = flat_state(student_modules(student))
            save_file(state, str(out / "student.safetensors"))
            (out / "result.json").write_text(json.dumps(result))
        dist.barrier()
        return 0
    except MmdkError as exc:
        dist.write_error(job_file, exc)
        return 1
    except Exception as exc:  # noqa: BLE001 - reported as one line by the launcher
        dist.write_error(job_file, MmdkError(f"internal error in a training rank: {type(exc).__name__}: {exc}"))
        raise
    finally:
        dist.shutdown()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
