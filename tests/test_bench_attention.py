"""scripts/bench_attention.py as a user runs it, on its quick path (a tiny model built from a config)."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_run_times_every_implementation_and_names_the_fastest():
    out = subprocess.run([sys.executable, "scripts/bench_attention.py", "--quick", "--rounds", "1", "--new-tokens", "4"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = {m.group(1): m for m in re.finditer(r"^(sdpa|eager|seam_grouped)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)",
                                               out.stdout, re.MULTILINE)}
    assert set(rows) == {"sdpa", "eager", "seam_grouped"}
    assert float(rows["sdpa"].group(4)) == 1.0  # the reference shares all its tokens with itself
    assert all(float(m.group(2)) > 0 and float(m.group(3)) > 0 for m in rows.values())
    last = out.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"best_decode=(sdpa|eager|seam_grouped) best_train=(sdpa|eager|seam_grouped)", last), last
