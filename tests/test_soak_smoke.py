"""Smoke test of the soak run: ``python -m bench.soak --quick`` (about 5 s, 500
connections churning with clean, reset and half closes, 4 slow clients) must pass
every check: replies, stored values, descriptors back to the baseline, RSS bound,
PING afterwards, exit status 0 on SIGTERM."""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quick_soak_passes():
    result = subprocess.run([sys.executable, "-m", "bench.soak", "--quick", "--json"], cwd=REPO,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["ok"] and summary["problems"] == [], summary
    assert summary["connections_made"] >= 500, summary
    assert all(count > 0 for count in summary["closes"].values()), summary
    assert all(count > 0 for count in summary["protocols"].values()), summary
    assert summary["slow_requests"] > 0, summary
    assert summary["fd_after"] <= summary["fd_baseline"], summary
    assert summary["rss_peak_mib"] <= summary["rss_bound_mib"], summary
