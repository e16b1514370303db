"""Where a liferaft command spends its time (issue 17): py-spy samples every
thread, idle ones too, and this prints the seconds per stage.

    sudo .venv/bin/python bench/profile.py -- .venv/bin/liferaft restore --repo R ...

py-spy is a bench tool, not a dependency of liferaft: `pip install py-spy`
into the venv (the "bench" extra). The page cache is dropped first, as the
bench does. Samples are thread-seconds: with four chunk threads on two
cores a stage's seconds add up to more than the wall time, and a thread
waiting for a core counts as running.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

RATE = 100  # samples per second and thread
# Stages of the chunk pipelines, by the function that does each.
STAGES = {
    "read the source or target (blockio)": ("SourceReader.read", "SourceReader.read_span"),
    "hash (chunk ids)": ("Envelope.chunk_id", "SealedEnvelope.chunk_id"),
    "compress and store (put_chunk)": ("Repository.put_chunk",),
    "store write": ("LocalStore.write", "HttpStore.write"),
    "fetch from the store": ("Repository._fetch_chunk", "Repository._read_chunk_file"),
    "decompress and check": ("Repository._unseal",),
    "write the target": ("TargetWriter.write_extents", "zero_range"),
    "check before writing (the pass, main thread)": ("_check_chunks",),
    "seed comparison (whole pass)": ("_Seed._check",),
    "partition table": ("write_table", "_partition_nodes"),
    "external commands": ("run",),
}


def stage_seconds(raw: str) -> tuple[float, dict[str, float]]:
    """(main thread seconds, seconds per stage) from py-spy's raw output."""
    main = 0.0
    stages: dict[str, float] = collections.defaultdict(float)
    for line in Path(raw).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        thread, *calls = stack.split(";")
        frames = [f.split(" (")[0] for f in calls]
        n = int(count) / RATE
        if "MainThread" in thread:
            main += n
        for stage, names in STAGES.items():
            if any(f in names for f in frames):
                stages[stage] += n
    return main, dict(stages)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="+", help="the command to profile, after --")
    args = parser.parse_args()
    spy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    if spy is None:
        print("profile: py-spy is missing: pip install py-spy into the venv", file=sys.stderr)
        return 2
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")
    with tempfile.TemporaryDirectory(prefix="liferaft-profile-") as d:
        raw = os.path.join(d, "samples.txt")
        argv = [spy, "record", "--idle", "--threads", "-r", str(RATE), "-f", "raw", "-o", raw]
        proc = subprocess.run([*argv, "--", *args.command], check=False)
        if not os.path.exists(raw):
            print(f"profile: py-spy wrote no samples (exit {proc.returncode})", file=sys.stderr)
            return 2
        main_seconds, stages = stage_seconds(raw)
    print(f"main thread {main_seconds:.1f} s; thread-seconds per stage:")
    for stage, seconds in sorted(stages.items(), key=lambda kv: -kv[1]):
        print(f"  {seconds:6.1f} s  {stage}")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
