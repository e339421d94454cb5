"""Smoke tests of the benchmark tools: kvfast-bench against a real server, and
``python -m bench.compare --quick`` end to end (kvfast, redis-server, asyncio)."""
import json
import os
import socket
import subprocess
import sys

import pytest

from conftest import require_tool, script_path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = ["set", "get", "incr", "put", "del", "mixed"]
REQUESTS = 2000


def kvfast_bench(*args, timeout=60):
    return subprocess.run([script_path("kvfast-bench"), *args], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("protocol", ["native", "resp"])
def test_kvfast_bench_json_is_sane(server, protocol):
    result = kvfast_bench("-h", server.host, "-p", str(server.port), "--json", "-q", "-n", str(REQUESTS),
                          "-c", "5", "-P", "4", "-t", ",".join(TESTS), "--protocol", protocol)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    reports = [json.loads(line) for line in result.stdout.splitlines()]
    assert [report["test"] for report in reports] == TESTS
    for report in reports:
        assert (report["protocol"], report["clients"], report["pipeline"]) == (protocol, 5, 4), report
        assert report["requests"] == REQUESTS, report
        assert report["errors"] == 0, report
        assert report["seconds"] > 0 and report["requests_per_second"] > 0, report
        latency = report["latency_ms"]
        assert 0 <= latency["p50"] <= latency["p99"] <= latency["p99.9"] <= latency["max"], report


def test_kvfast_bench_closed_port_is_a_one_line_error():
    # A bound but not listening socket: connections to its port are refused,
    # and no other process can take the port while the test runs.
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
        result = kvfast_bench("-h", "127.0.0.1", "-p", str(port), "-n", "100", "-c", "2", "--json", "-q")
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("kvfast-bench: error: "), result.stderr


def test_compare_quick_writes_report(tmp_path):
    for tool in ("redis-server", "redis-benchmark"):
        require_tool(tool)
    out = tmp_path / "results"
    result = subprocess.run([sys.executable, "-m", "bench.compare", "--quick", "--out", str(out)],
                            cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    markdown = (out / "compare.md").read_text()
    assert markdown in result.stdout
    for name in ("kvfast", "redis", "asyncio"):
        assert name in markdown
    assert "| load | server | requests/s | server CPU µs/request | p99 ms |" in markdown
    assert "RSS bytes/key" in markdown and "≤ 0.85×" in markdown
    report = json.loads((out / "compare.json").read_text())
    assert set(report["summary"]) == {f"{protocol}-{operation}-P{pipeline}" for pipeline in (1, 16)
                                      for protocol, operations in (("resp", ("setnx", "get")),
                                                                   ("native", ("set", "get")))
                                      for operation in operations}
    for servers in report["summary"].values():
        for figures in servers.values():
            assert figures["requests_per_second"] > 0 and figures["server_cpu_us_per_request"] >= 0
    assert {entry["server"] for entry in report["memory"]} == {"kvfast", "redis", "asyncio"}
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_persistence_quick_reports_every_part(tmp_path):
    """python -m bench.persistence --quick: all three parts run and report numbers."""
    out = tmp_path / "persistence.json"
    result = subprocess.run([sys.executable, "-m", "bench.persistence", "--quick", "--json", str(out),
                             "--dir", str(tmp_path)],
                            cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| load | figure | log off | `--fsync no` | `everysec` | `always` | everysec ÷ off |" in result.stdout
    assert "## 2. Replay" in result.stdout and "## 3." in result.stdout
    report = json.loads(out.read_text())
    assert {"throughput", "replay", "compaction"} <= set(report)
    for runs in report["throughput"]["runs"].values():
        for policy in ("off", "no", "everysec", "always"):
            assert all(run["errors"] == 0 and run["requests_per_second"] > 0 for run in runs[policy]), runs
    assert report["problems"] == [] or all("other" in problem or "rebuilt" in problem
                                           for problem in map(str, report["problems"])), report["problems"]


def test_floor_quick_prints_the_tables():
    for tool in ("redis-server", "redis-benchmark", "kvfast-bench"):
        require_tool(tool)
    result = subprocess.run([sys.executable, "-m", "bench.floor", "--quick"], cwd=REPO,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line for line in result.stdout.splitlines()
            if line.startswith(("| SET NX P1", "| GET P1", "| native set P1", "| native get P1"))]
    assert len(rows) == 4, result.stdout
    for row in rows:
        floor, kvfast, reference = (float(cell) for cell in row.split("|")[2:5])   # Redis or asyncio
        assert min(floor, kvfast, reference) >= 0 and max(floor, kvfast, reference) < 1000, row


def test_versus_builds_the_base_and_removes_its_worktree(tmp_path):
    """python -m bench.versus --base HEAD: a worktree of HEAD is built, both
    builds run the loads, the table has their rows, and the worktree is gone."""
    require_tool("git")
    pytest.importorskip("Cython", reason="bench.versus builds the base commit with this interpreter's Cython")
    if subprocess.run(["git", "-C", REPO, "rev-parse", "HEAD"], capture_output=True).returncode != 0:
        pytest.skip("not a git checkout: bench.versus needs a commit to check out")

    def worktrees():
        return subprocess.run(["git", "-C", REPO, "worktree", "list", "--porcelain"], capture_output=True,
                              text=True, check=True).stdout

    before = worktrees()
    out = tmp_path / "versus.json"
    result = subprocess.run([sys.executable, "-m", "bench.versus", "--base", "HEAD", "--rounds", "1",
                             "--requests", str(REQUESTS), "--loads", "native-set-P1,native-get-P1",
                             "--json", str(out)],
                            cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    assert worktrees() == before
    assert "| load | old µs/req | new µs/req | new ÷ old µs/req | old req/s | new req/s | new ÷ old req/s |" \
        in result.stdout
    rows = [line for line in result.stdout.splitlines() if line.startswith("| native ")]
    assert [row.split("|")[1].strip() for row in rows] == ["native set P1", "native get P1"], result.stdout
    for row in rows:
        old_cpu, new_cpu = (float(cell) for cell in row.split("|")[2:4])
        assert 0 <= old_cpu < 1000 and 0 <= new_cpu < 1000, row
    report = json.loads(out.read_text())
    assert report["settings"]["loads"] == ["native-set-P1", "native-get-P1"]
    for load in report["settings"]["loads"]:
        for build in ("old", "new"):
            [run] = report["runs"][load][build]
            assert run["requests"] == REQUESTS and run["errors"] == 0 and run["requests_per_second"] > 0
        assert report["summary"][load]["requests_per_second_ratio"]["median"] > 0
