"""The README's demo command, run as a newcomer would: it must end with one round played."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_demo_plays_one_paid_round_end_to_end():
    """GIVEN a fresh machine WHEN the demo runs THEN one credit is granted and confirmed by the
    cabinet, and the session closed."""
    run = subprocess.run(
        [sys.executable, "demo/run.py"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )

    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = run.stdout
    assert "POST /webhook → 200" in out
    assert "arcade/machine/demo01/coinpulse" in out
    assert "arcade/machine/demo01/gameover" in out
    # The cabinet and the API keep logging while the state prints: take the JSON block only.
    after_header = out[out.index("[9] GET /machines/demo01") :]
    block = after_header[after_header.index("\n{\n") + 1 :]
    state = json.loads(block[: block.index("\n}\n") + 2])
    assert state["credits"] == {"granted": 1, "used": 1, "left": 0}
    # The cabinet fired the coin and confirmed it: more than the broker's PUBACK.
    assert state["payments"][0]["status"] == "credited"
    assert state["presence"] == "online"
    assert state["state"] == "idle" and state["session"] is None
    assert "Demo passed" in out
