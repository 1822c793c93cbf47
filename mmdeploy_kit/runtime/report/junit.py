"""JUnit XML: one ``<testcase>`` per gate (failed -> ``<failure>``, no threshold -> ``<skipped>``)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Sequence

from ..schema import Gate


def render_junit(gates: Sequence[Gate], suite: str = "mmdk.bench", duration_s: float = 0.0) -> str:
    failures = sum(1 for g in gates if g.passed is False)
    skipped = sum(1 for g in gates if g.passed is None)
    root = ET.Element("testsuites", name=suite, tests=str(len(gates)), failures=str(failures), errors="0",
                      skipped=str(skipped), time=f"{duration_s:.3f}")
    ts = ET.SubElement(root, "testsuite", name=suite, tests=str(len(gates)), failures=str(failures), errors="0",
                       skipped=str(skipped), time=f"{duration_s:.3f}")
    for g in gates:
        tc = ET.SubElement(ts, "testcase", classname=f"{suite}.{g.kind}.{g.artifact}", name=g.name, time="0")
        detail = f"value={g.value!r} baseline={g.baseline!r} threshold={g.threshold!r}"
        if g.ci_low is not None and g.ci_high is not None:
            detail += f" ci=[{g.ci_low!r}, {g.ci_high!r}]"
        if g.verdict:
            detail += f" verdict={g.verdict}"
        if g.passed is False:
            f = ET.SubElement(tc, "failure", message=g.message or "regression", type=f"{g.kind}_regression")
            f.text = detail
        elif g.passed is None:
            ET.SubElement(tc, "skipped", message=f"no threshold set; {g.message}")
        else:
            out = ET.SubElement(tc, "system-out")
            out.text = f"{g.message} ({detail})"
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
