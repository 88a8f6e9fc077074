"""``pylog serve`` and SIGTERM while it is still starting: the stop is clean.

A service manager may stop a server the moment it starts (or while a large data dir
opens).  The signal handlers are installed before the data dir is opened, so a SIGTERM
at any point after that ends in a clean shutdown (clean-shutdown marker written, exit
status 0), never the default death that makes the next start recover every partition.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pylog


def test_sigterm_while_starting_ends_in_a_clean_shutdown(tmp_path):
    data = str(tmp_path / "data")
    with pylog.open(data) as client:          # something to open and to close cleanly
        client.create_topic("t", 8)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pylog.cli", "serve", "--data-dir", data, "--listen", "127.0.0.1:0",
         "--log-level", "INFO"], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    assert proc.stderr is not None
    lines = []
    try:
        for line in proc.stderr:
            lines.append(line)
            if "broker opened" in line:       # logged before the server listens
                proc.send_signal(signal.SIGTERM)
                break
        lines.extend(proc.stderr)
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    text = "".join(lines)
    assert code == 0, f"exit status {code}:\n{text[-3000:]}"
    assert "received SIGTERM" in text and "broker closed cleanly" in text, text[-3000:]
    assert os.path.exists(os.path.join(data, ".kafka_cleanshutdown"))
