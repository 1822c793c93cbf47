"""Manifests stay small and sizes count models: a 2000-epoch distillation once wrote 2000 eval records (654 KB,
more than its 372 KB model) into its manifest, and the run report counted that manifest as model size."""

from __future__ import annotations

import json

from mmdeploy_kit.artifacts import Artifact, Manifest, describe_file


def test_a_long_eval_history_is_summarised_and_kept_in_a_side_file(tmp_path):
    from mmdeploy_kit.passes.distill import EVAL_FILE, EVAL_KEEP, summarise_eval

    history = [{"step": 10 * (k + 1), "epoch": k + 1, "zero_shot_top1": 50 + (k % 7)} for k in range(2000)]
    best = history[1234]
    kept, side = summarise_eval(history, best, tmp_path)
    assert len(kept) <= EVAL_KEEP + 1 and kept[0] == history[0] and kept[-1] == history[-1] and best in kept
    assert [e["step"] for e in kept] == sorted(e["step"] for e in kept)
    assert side == {"file": EVAL_FILE, "records": 2000, "kept_in_manifest": len(kept)}
    assert [json.loads(ln) for ln in (tmp_path / EVAL_FILE).read_text().splitlines()] == history
    assert len(json.dumps(kept)) < 4000
    short = history[:5]
    assert summarise_eval(short, None, tmp_path)[0] == short  # a short run keeps every record
    assert summarise_eval([], None, tmp_path) == ([], None)


def test_a_steps_size_on_disk_counts_model_files_only(tmp_path):
    from mmdeploy_kit.pipeline.runner import StepResult, _collect_figures

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.safetensors").write_bytes(b"w" * 3000)
    (tmp_path / "eval_history.jsonl").write_bytes(b"e" * 50_000)  # side file
    arts = [Artifact(kind="torch", tower=t, path="model", **describe_file(tmp_path, "model")) for t in ("a", "b")]
    Manifest(pass_name="distill", artifacts=arts, metrics={"eval": [{"step": 1}] * 500}).write(tmp_path)
    res = StepResult(name="distill", pass_name="distill", version="1", config={}, key="k", input_sha256="",
                     data_sha256={})
    _collect_figures(res, tmp_path)
    assert res.size_bytes == 3000  # the model once (two towers share it); no manifest, no side file
