"""What the terminal shows during a search: a line per finished run (off a terminal) with an ETA from
the pace of the work, event lines as they come, and Ray's own output kept in the run's log."""

from __future__ import annotations

import subprocess
import sys

from fsray.search.progress import Progress


def test_plain_lines_per_run_and_event_lines():
    lines: list[str] = []
    p = Progress(say=lines.append)
    p.plan(4)
    p.on_event({"kind": "done", "seed": 0, "tag": "baseline", "status": "ok", "seconds": 10.0})
    p.on_event({"kind": "retry", "line": "seed 3 (trial t prompt_fs) lost: its node was lost"})
    p.on_event({"kind": "done", "seed": 1, "tag": "trial t", "status": "failed", "seconds": 5.0})
    assert lines[0].startswith("[tune] run 1/4 done: seed 0 baseline in 10 s")
    assert lines[1] == "[tune] seed 3 (trial t prompt_fs) lost: its node was lost"
    assert lines[2].startswith("[tune] run 2/4 done: seed 1 trial t (failed) in 5 s")
    assert "ETA" in lines[2] and "ETA ?" not in lines[2]      # paced from the first run's start
    p.on_event({"kind": "done", "seed": 2, "seconds": 1.0})
    p.on_event({"kind": "done", "seed": 3, "seconds": 1.0})
    p.on_event({"kind": "done", "seed": 4, "seconds": 1.0})   # more runs than planned: the plan grows
    assert lines[-1].startswith("[tune] run 5/5 done")


QUIET = """
import os, sys
from pathlib import Path
from fsray.search.progress import quiet_output
with quiet_output(Path(sys.argv[1])) as terminal:
    os.write(1, b"raw stdout (like the raylet's warnings)\\n")
    os.write(2, b"raw stderr (like Ray's C++ logs)\\n")
    print("python stdout", flush=True)
    print("python stderr", file=sys.stderr, flush=True)
    terminal.write("ours\\n")
print("after")
"""


def test_quiet_output_sends_ray_noise_to_the_log_and_our_lines_to_the_terminal(tmp_path):
    log = tmp_path / "ray.log"
    out = subprocess.run([sys.executable, "-c", QUIET, str(log)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "ours\nafter\n" and out.stderr == ""
    text = log.read_text()
    for noise in ("raw stdout", "raw stderr", "python stdout", "python stderr"):
        assert noise in text
