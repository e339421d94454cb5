"""Prometheus: kvfast's own --metrics-port (kvfast/_metrics.pyx, _stats.write_prometheus), the
prometheus-redis-exporter pointed at kvfast, and the systemd unit of examples/systemd.

kvfast's /metrics is parsed with prometheus_client's parser (text format 0.0.4); bad HTTP requests
get their status and leave the loop serving; the exporter (a Debian package, installed by .ci/run)
reports what an operator's dashboard reads.
"""
import re
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import ServerProcess, redis_py_client, require_tool, stop_process
from helpers import free_port, wait_for

REPOSITORY = Path(__file__).resolve().parent.parent
METRICS = re.compile(rb"kvfast metrics on http://([^ ]+):(\d+)/metrics")


@pytest.fixture
def metrics_server():
    server = ServerProcess("--metrics-port", "0")      # its metrics line follows the listening lines
    try:
        line = server.proc.stdout.readline()
        server.startup_lines.append(line)
        match = METRICS.search(line)
        assert match, line
        server.metrics_url = f"http://{match.group(1).decode()}:{int(match.group(2))}/metrics"
        server.metrics_address = (match.group(1).decode(), int(match.group(2)))
        yield server
    finally:
        server.close()


def fetch(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.headers, response.read().decode()


def families(text):
    return {family.name: family for family in text_string_to_metric_families(text)}


def sample(found, family, name=None):
    return found[family].samples[0].value if name is None else \
        next(s.value for s in found[family].samples if s.name == name)


def test_metrics_port_serves_the_counters_and_gauges(metrics_server):
    client = redis_py_client(metrics_server, "hiredis")
    client.set(1, 2)
    client.get(1)
    client.get(3)
    status, headers, text = fetch(metrics_server.metrics_url)
    assert status == 200 and headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    found = families(text)
    assert found["kvfast_commands_processed"].type == "counter"
    assert sample(found, "kvfast_commands_processed", "kvfast_commands_processed_total") >= 3
    assert sample(found, "kvfast_keyspace_hits", "kvfast_keyspace_hits_total") == 1
    assert sample(found, "kvfast_keyspace_misses", "kvfast_keyspace_misses_total") == 1
    assert found["kvfast_connected_clients"].type == "gauge" and sample(found, "kvfast_connected_clients") == 1
    assert sample(found, "kvfast_keys") == 1 and sample(found, "kvfast_used_memory") > 0
    assert found["kvfast_maxclients"].documentation == "INFO clients maxclients"
    for line in text.splitlines():          # every sample has its HELP and TYPE lines (a histogram's, its family's)
        if not line.startswith("#"):
            name = line.split()[0].split("{")[0]
            if f"# TYPE {name} " not in text:
                name = re.sub(r"_(bucket|sum|count)$", "", name)
            assert f"# TYPE {name} " in text and f"# HELP {name} " in text, line


def test_metrics_port_serves_per_command_calls_and_latency_histograms(metrics_server):
    client = redis_py_client(metrics_server, "hiredis")
    client.set(1, 2)
    for _ in range(5):
        client.get(1)
    client.mget(1, 2, 3)
    try:
        client.incr(1, "x")
    except Exception:                       # a rejected (non-integer) increment: a failed call
        pass
    found = families(fetch(metrics_server.metrics_url)[2])
    calls = {s.labels["command"]: s.value for s in found["kvfast_command_calls"].samples}
    assert calls["get"] == 5 and calls["set"] == 1 and calls["mget"] == 1 and calls["incrby"] == 1
    failed = {s.labels["command"]: s.value for s in found["kvfast_command_failed_calls"].samples}
    assert failed["incrby"] == 1 and failed["get"] == 0
    histogram = found["kvfast_command_duration_seconds"]
    assert histogram.type == "histogram"
    get = [s for s in histogram.samples if s.labels["command"] == "get"]
    buckets = [(float(s.labels["le"]), s.value) for s in get if s.name.endswith("_bucket")]
    assert buckets[-1] == (float("inf"), 5) and [b for b, _ in buckets] == sorted(b for b, _ in buckets)
    assert all(earlier <= later for (_, earlier), (_, later) in zip(buckets, buckets[1:]))
    assert next(s.value for s in get if s.name.endswith("_count")) == 5
    assert 0 < next(s.value for s in get if s.name.endswith("_sum")) < 1


def test_metrics_bad_requests_get_their_status_and_the_loop_serves_on(metrics_server):
    base = metrics_server.metrics_url.removesuffix("/metrics")
    with pytest.raises(urllib.error.HTTPError) as error:
        fetch(base + "/nope")
    assert error.value.code == 404
    request = urllib.request.Request(metrics_server.metrics_url, data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=10)
    assert error.value.code == 405
    for raw, status in ((b"garbage\r\n\r\n", b"400"), (b"GET /metrics\r\n\r\n", b"400"),
                        (b"GET " + b"x" * 9000, b"431"), (b"HEAD /metrics HTTP/1.0\r\n\r\n", b"200")):
        with socket.create_connection(metrics_server.metrics_address, timeout=10) as sock:
            sock.sendall(raw)
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 " + status), reply
        if raw.startswith(b"HEAD"):
            assert reply.endswith(b"\r\n\r\n")      # no body
    idle = socket.create_connection(metrics_server.metrics_address, timeout=10)
    idle.sendall(b"GET /metr")                  # never finished: closed after a while, the loop unharmed
    assert fetch(metrics_server.metrics_url + "?name=x")[0] == 200
    client = redis_py_client(metrics_server, "python")
    assert client.ping()
    assert idle.recv(100) == b""
    idle.close()
    # metrics connections are not clients: only redis-py's is counted
    assert sample(families(fetch(metrics_server.metrics_url)[2]), "kvfast_connected_clients") == 1
    client.close()


def test_prometheus_redis_exporter_reads_kvfast(server):
    exporter = require_tool("prometheus-redis-exporter")
    client = redis_py_client(server, "hiredis")
    client.set(1, 2)
    client.get(1)
    client.get(2)
    port = free_port()
    process = subprocess.Popen([exporter, "-redis.addr", f"redis://{server.host}:{server.port}",
                                "-web.listen-address", f"127.0.0.1:{port}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def scraped():
            try:
                return fetch(f"http://127.0.0.1:{port}/metrics")[2]
            except OSError:
                return None
        found = families(wait_for(scraped, message="the exporter's /metrics"))
    finally:
        stop_process(process)
        process.stderr.close()
    assert sample(found, "redis_up") == 1
    assert sample(found, "redis_connected_clients") >= 1
    assert sample(found, "redis_commands_processed", "redis_commands_processed_total") >= 3
    assert sample(found, "redis_keyspace_hits", "redis_keyspace_hits_total") == 1
    assert sample(found, "redis_keyspace_misses", "redis_keyspace_misses_total") == 1
    assert next(s.value for s in found["redis_db_keys"].samples if s.labels["db"] == "db0") == 1
    assert sample(found, "redis_memory_used_bytes") > 0
    assert sample(found, "redis_config_maxclients") == 10000       # from CONFIG GET *
    calls = {s.labels["cmd"]: s.value for s in found["redis_commands"].samples if s.name == "redis_commands_total"}
    assert calls["get"] == 2 and calls["set"] == 1                # from INFO commandstats


def test_systemd_unit_verifies(tmp_path):
    """systemd-analyze verify (the systemd package: installed by .ci/run) on the example unit, its
    ExecStart pointed at this installation's kvfast-server (verify checks that it exists)."""
    analyze = require_tool("systemd-analyze")
    unit = (REPOSITORY / "examples" / "systemd" / "kvfast.service").read_text()
    for setting in ("ProtectSystem=strict", "StateDirectory=kvfast", "LimitNOFILE=", "NoNewPrivileges=yes"):
        assert setting in unit
    installed = shutil.which("kvfast-server")
    assert installed
    (tmp_path / "kvfast.service").write_text(unit.replace("/opt/kvfast/bin/kvfast-server", installed))
    result = subprocess.run([analyze, "verify", str(tmp_path / "kvfast.service")], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "kvfast.service" not in result.stderr, result.stderr      # no warning about the unit
    assert Path(installed).exists()
