"""Child process of the crash tests: appends batches to a log until killed.

    python -m tests.storage.crash_writer <log_dir> <seed>

Batch i holds records ``b"<i>:<j>"``; every few batches it flushes and then prints
``flushed <log_end_offset>`` (the acknowledgement the parent relies on).  It is killed
with SIGKILL at a random moment by the parent.
"""

import random
import sys

from pylog.storage import Log
from tests.storage.batches import make_batch


def main() -> None:
    log_dir, seed = sys.argv[1], int(sys.argv[2])
    r = random.Random(seed)
    log = Log.open(log_dir, segment_bytes=r.choice([4096, 16384, 1 << 20]), index_interval_bytes=256)
    i = log.log_end_offset
    print(f"start {i}", flush=True)
    while True:
        n = r.randint(1, 8)
        size = r.choice([10, 100, 1000])
        log.append(make_batch([b"%d:%d:" % (i, j) + b"x" * size for j in range(n)]))
        i += n
        if r.random() < 0.1:
            log.flush()
            print(f"flushed {log.log_end_offset}", flush=True)


if __name__ == "__main__":
    main()
