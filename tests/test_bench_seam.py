"""scripts/bench_seam.py as a user runs it, on its quick path (a tiny model built from a config)."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROW = r"^({name})\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)\s+([\d.e+-]+)$"


def test_quick_run_times_every_method_and_agrees_with_the_naive_path():
    out = subprocess.run([sys.executable, "scripts/bench_seam.py", "--quick", "--repeats", "2", "--prompts", "2",
                          "--candidates", "3"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "median of 2 round(s)" in out.stdout
    rows = {m.group(1): m for m in re.finditer(ROW.format(name=r"[a-z0-9-]+"), out.stdout, re.MULTILINE)}
    assert {"naive", "padded", "ours"} <= set(rows)
    assert float(rows["naive"].group(6)) == 0.0  # the reference against itself
    # fp32 paths give the naive path's SEAM; bf16 rows (where the CPU has bf16) to bf16's precision.
    assert all(float(rows[name].group(6)) < 1e-5 for name in ("padded", "ours"))
    assert all(float(m.group(6)) < 1e-2 for m in rows.values())
    # The tiny PM and RM are one model: they share their bottom block, and the bench also times ours without that.
    assert "share their bottom 1 of 2 blocks" in out.stdout
    assert any(name.endswith("-unshared") for name in rows)
    assert re.search(r"^without shared blocks: speedup_vs_naive_fp32=[\d.]+ flop_fraction=[\d.]+$", out.stdout,
                     re.MULTILINE)
    last = out.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"speedup_vs_naive=[\d.]+ speedup_vs_padded=[\d.]+ speedup_vs_naive_fp32=[\d.]+ "
                        r"flop_fraction=[\d.]+", last), last
