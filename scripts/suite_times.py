#!/usr/bin/env python
"""Is the suite slower than before? Per-test times of two runs (junit XML), matched by module and name.

Issue 18's check: run the suite at the old commit and at HEAD at the same time, one torch
thread each, so both see the same machine, then compare the tests they share (files moved
between tests/, tests/unit/ and tests/integration/ still match by module name):

    OMP_NUM_THREADS=1 python -m pytest -q --junitxml=old.xml   # in a clone at the old commit
    OMP_NUM_THREADS=1 python -m pytest -q --junitxml=new.xml   # in a clone at HEAD, concurrently
    python scripts/suite_times.py old.xml new.xml
"""
from __future__ import annotations

import sys
import xml.etree.ElementTree as ET

Case = tuple[str, str]  # (module, test name)


def load(path: str) -> tuple[dict[Case, tuple[float, bool, bool]], float]:
    """Per test case (seconds, failed, skipped), and the run's total seconds."""
    out = {}
    root = ET.parse(path).getroot()
    for case in root.iter("testcase"):
        module = case.get("classname", "").split(".")[-1]
        key = (module, case.get("name"))
        failed = any(c.tag in ("failure", "error") for c in case)
        skipped = any(c.tag == "skipped" for c in case)
        out[key] = (float(case.get("time", 0)), failed, skipped)
    suite = root.find("testsuite") if root.tag == "testsuites" else root
    return out, float(suite.get("time", 0))


def main(old_xml: str, new_xml: str) -> None:
    old, old_total = load(old_xml)
    new, new_total = load(new_xml)
    common = sorted(set(old) & set(new))
    by_name_old = {n: t for (m, n), t in old.items()}
    moved = [k for k in set(new) - set(old) if k[1] in by_name_old]
    t_old = sum(old[k][0] for k in common)
    t_new = sum(new[k][0] for k in common)
    print(f"old: {len(old)} tests, {old_total:.0f} s; new: {len(new)} tests, {new_total:.0f} s")
    print(f"common (same module and name): {len(common)}; old {t_old:.0f} s, new {t_new:.0f} s, "
          f"ratio new/old {t_new / t_old:.3f}")
    print(f"new tests matched by name only (moved module): {len(moved)}")
    only_new = sum(t for k, (t, *_) in new.items() if k not in old)
    print(f"tests only in new: {len(set(new) - set(old))}, {only_new:.0f} s; only in old: {len(set(old) - set(new))}")
    slower = sorted(((new[k][0] - old[k][0], k) for k in common), reverse=True)[:10]
    print("largest slowdowns:", [(f"{d:+.1f}s", k) for d, k in slower])
    faster = sorted(((new[k][0] - old[k][0], k) for k in common))[:5]
    print("largest speedups:", [(f"{d:+.1f}s", k) for d, k in faster])
    print("failed old:", [k for k, v in old.items() if v[1]], "failed new:", [k for k, v in new.items() if v[1]])


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python scripts/suite_times.py OLD.xml NEW.xml")
    main(sys.argv[1], sys.argv[2])
