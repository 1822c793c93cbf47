"""Every hint that names a flag names one that exists on the command that raises it (issue 18: a hint must never
recommend a flag the code ignores or lacks), and help texts read the one tolerance table."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "mmdeploy_kit"
FLAG = re.compile(r"(?<![\w{-])--[a-z][a-z0-9-]*")
MMDK_CMD = re.compile(r"\bmmdk ((?:data |recipes )?[a-z][a-z-]*)")
# where a module's errors surface: the verb whose options its hints may name (others: any command)
VERBS = {"passes/export/": {"export", "build-engines"}, "passes/quantize/": {"quantize"},
         "passes/prune/": {"prune"}, "passes/distill.py": {"distill"}, "train/distill.py": {"distill"}}


def _strings(node: ast.AST):
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, ast.JoinedStr):
        yield "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    elif isinstance(node, (ast.BinOp, ast.IfExp, ast.BoolOp)):
        for child in ast.iter_child_nodes(node):
            yield from _strings(child)


def _hints():
    """(module, line, text) of every ``hint=`` string: keyword arguments and parameter defaults."""
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            values = []
            if isinstance(node, ast.Call):
                values = [k.value for k in node.keywords if k.arg == "hint"]
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                values = [d for arg, d in zip(a.args[::-1], a.defaults[::-1]) if arg.arg == "hint"]
                values += [d for arg, d in zip(a.kwonlyargs, a.kw_defaults) if arg.arg == "hint" and d is not None]
            for v in values:
                for text in _strings(v):
                    yield rel, node.lineno, text


def _command_flags() -> dict[str, set[str]]:
    import typer.main

    from mmdeploy_kit.cli.app import app

    root = typer.main.get_command(app)
    common = {o for p in root.params for o in (*p.opts, *p.secondary_opts)}

    def walk(cmd, path=()):
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                yield from walk(sub, (*path, name))
        else:
            yield " ".join(path), common | {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}

    return dict(walk(root))


def test_every_hint_names_a_flag_of_its_command():
    commands = _command_flags()
    any_command = set().union(*commands.values())
    checked, bad = 0, []
    for rel, line, text in _hints():
        verbs = next((v for prefix, v in VERBS.items() if rel.startswith(prefix)), None)
        # flags before any "mmdk CMD" belong to the module's verb; flags after "mmdk CMD" to CMD
        parts = MMDK_CMD.split(text.replace("re-export", "mmdk export"))
        segments = [(verbs, parts[0])] + [({parts[i]}, parts[i + 1]) for i in range(1, len(parts), 2)]
        for cmds, segment in segments:
            for flag in FLAG.findall(segment):
                checked += 1
                allowed = any_command if cmds is None else set().union(*(commands.get(c, set()) for c in cmds))
                if flag not in allowed:
                    bad.append(f"{rel}:{line}: {flag} is not an option of {sorted(cmds or ['any command'])}")
    assert checked > 50  # the walk really found the hints
    assert bad == []


def test_help_texts_read_the_tolerance_table(monkeypatch):
    from mmdeploy_kit.runtime.verify import MIN_COSINE, min_cosine_floor, min_cosine_help

    assert min_cosine_floor("tensorrt_onnx", "int8") == MIN_COSINE["tensorrt_onnx"]["int8"]
    assert min_cosine_floor("tensorrt_onnx", "int8", 0.9) == 0.9  # the user's floor wins
    assert min_cosine_help("tensorrt_engine") == ", ".join(f"{p} {v:g}" for p, v in MIN_COSINE["tensorrt_engine"].items())
    from mmdeploy_kit.passes.export.onnx import OnnxExportConfig
    from mmdeploy_kit.passes.quantize.config import DEFAULT_MIN_COSINE

    assert OnnxExportConfig().min_cosine == MIN_COSINE["export_onnx"]["fp32"]
    assert DEFAULT_MIN_COSINE is MIN_COSINE["quantize"]


@pytest.mark.parametrize("command,check", [("build-engines", "tensorrt_engine"), ("quantize", "quantize"),
                                           ("export", "tensorrt_onnx")])
def test_min_cosine_help_is_the_table(command, check):
    import typer.main

    from mmdeploy_kit.cli.app import app
    from mmdeploy_kit.runtime.verify import min_cosine_help

    cmd = typer.main.get_command(app).commands[command]
    opt = next(p for p in cmd.params if "--min-cosine" in p.opts)
    assert min_cosine_help(check) in " ".join(opt.help.split())


def test_one_verification_loop_serves_every_check():
    """verify_tower, the TensorRT bundle check, the engine check and torch-tensorrt share ``verify_runs``."""
    import numpy as np

    from mmdeploy_kit.errors import VerificationError
    from mmdeploy_kit.runtime.verify import verify_runs

    feeds = {"x": np.ones((2, 4), np.float32)}
    same = verify_runs(lambda f: {"y": f["x"] * 2}, lambda f: {"y": f["x"] * 2}, [({"shape": "opt"}, feeds)], 0.99,
                       what="engine e.plan")
    assert same["cosine_min"] > 0.999 and same["checks"][0]["shape"] == "opt" and same["min_cosine_required"] == 0.99
    with pytest.raises(VerificationError, match=r"engine e.plan disagrees with its source: .* at the opt shape"):
        verify_runs(lambda f: {"y": f["x"]}, lambda f: {"y": -f["x"]}, [({"shape": "opt", "sizes": {}}, feeds)], 0.5,
                    what="engine e.plan")
    with pytest.raises(VerificationError, match="produced NaN/Inf"):
        verify_runs(lambda f: {"y": f["x"]}, lambda f: {"y": f["x"] * np.nan}, [({}, feeds)], 0.5, what="t")
    import inspect

    from mmdeploy_kit.passes.export import tensorrt, torch_tensorrt, trt_build

    for mod in (tensorrt, torch_tensorrt, trt_build):
        assert "verify_runs(" in inspect.getsource(mod) and "compare_outputs(" not in inspect.getsource(mod)
