"""Run the CPU benchmarks one after another (what `make bench` does); each prints its own table.

The full quality benchmark (bench_quality.py --max-rows 15000 --epochs 3) takes about 40 minutes on 2 cores and
is not part of this run; the run below uses the demo-sized slice. Neither is the simulated reviewer
(bench_review_loop.py: two trainings on the whole catalog, about 20 minutes).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNS = [
    ["bench_import.py"],
    ["bench_validate.py"],
    ["bench_train_speed.py", "--steps", "20", "--batch", "32", "--max-length", "48", "--repeats", "2"],
    ["bench_quality.py", "--max-rows", "3000", "--epochs", "2"],
    ["bench_serving.py", "--duration", "5"],
    ["bench_explain.py", "--items", "40"],
    ["bench_suspects.py", "--rows", "8000", "--compare"],
]


def main() -> int:
    failed = []
    for run in RUNS:
        print(f"\n=== {' '.join(run)}", flush=True)
        if subprocess.run([sys.executable, str(HERE / run[0]), *run[1:]], cwd=HERE.parent).returncode != 0:
            failed.append(run[0])
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
