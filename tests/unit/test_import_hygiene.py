"""`import mmdeploy_kit` and `mmdk --help` must not import torch / onnxruntime / tensorrt."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "onnxruntime", "tensorrt", "transformers", "openvino", "nncf")

CODE = """
import sys
{body}
print("LOADED:" + ",".join(m for m in {heavy!r} if m in sys.modules))
"""


def _loaded(body: str) -> str:
    out = subprocess.run([sys.executable, "-c", CODE.format(body=body, heavy=HEAVY)], capture_output=True,
                         text=True, check=True)
    return out.stdout.strip().splitlines()[-1].removeprefix("LOADED:")


def test_import_package_is_light():
    assert _loaded("import mmdeploy_kit; import mmdeploy_kit.api; mmdeploy_kit.__version__") == ""


def test_cli_help_is_light():
    body = ("from mmdeploy_kit.cli import main\n"
            "for args in (['--help'], ['export', '--help'], ['inspect', '--help'], ['data', 'synth', '--help']):\n"
            "    try:\n        main(args)\n    except SystemExit:\n        pass")
    assert _loaded(body) == ""


def test_mmdk_console_script_runs():
    exe = __import__("pathlib").Path(sys.executable).with_name("mmdk")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "export" in out.stdout


def test_public_functions_survive_importing_every_submodule():
    """A submodule named like a public function (``mmdeploy_kit/demo.py`` vs ``mmdk.demo``) replaces the
    function on the package once anything imports it (which is why the harness lives in ``runtime/``)."""
    body = ("import importlib, importlib.util, pkgutil, mmdeploy_kit, mmdeploy_kit.api as api\n"
            "for m in pkgutil.walk_packages(mmdeploy_kit.__path__, 'mmdeploy_kit.'):\n"
            "    if m.name.split('.')[1] != 'cli':\n"
            "        try:\n"
            "            importlib.import_module(m.name)\n"
            "        except ModuleNotFoundError as e:  # a module of an extra that is not installed (torch)\n"
            "            if e.name is None or importlib.util.find_spec(e.name.split('.')[0]) is not None:\n"
            "                raise\n"
            "bad = [n for n in mmdeploy_kit._API if getattr(mmdeploy_kit, n) is not getattr(api, n)]\n"
            "print('BAD:' + ','.join(bad))")
    out = subprocess.run([sys.executable, "-c", body], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "BAD:"
