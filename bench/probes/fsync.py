#!/usr/bin/env python3
"""fsync latency of this disk, back to back and after 20 ms of quiet.

usage: bench/probes/fsync.py [DIR]   (DIR: a directory on the disk to measure; default .)
"""
import os
import sys
import time

path = os.path.join(sys.argv[1] if len(sys.argv) > 1 else ".", "fsync-probe.tmp")
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
try:
    for pause in (0, 0.02):
        r = []
        for i in range(200):
            if pause:
                time.sleep(pause)
            os.pwrite(fd, b"x" * 4096, (i % 64) * 4096)
            t = time.perf_counter()
            os.fsync(fd)
            r.append((time.perf_counter() - t) * 1e3)
        r.sort()
        print(f"pause {pause * 1e3:.0f} ms: fsync p50 {r[100]:.3f} ms p90 {r[180]:.3f} ms")
finally:
    os.close(fd)
    os.unlink(path)
