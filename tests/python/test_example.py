"""examples/torch_hooks/compare_seeds.py runs and prints the paper's table."""
import os
import re
import subprocess
import sys

from conftest import ROOT


def test_compare_seeds_prints_the_table(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "torch_hooks" / "compare_seeds.py"), "--out",
                           str(tmp_path), "--no-report"], capture_output=True, text=True, env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    rows = {m.group(1): (float(m.group(2)), float(m.group(3)))
            for m in re.finditer(r"^(conv1|conv2|dense)\s+\d+\s+([0-9.]+)\s+([0-9.]+)", done.stdout, re.M)}
    assert sorted(rows) == ["conv1", "conv2", "dense"], done.stdout
    for semi, match in rows.values():
        assert 0 < match <= semi <= 1  # each unit's best partner is at least its one-to-one partner
    for layer in rows:
        assert (tmp_path / layer / "summary.json").exists()
