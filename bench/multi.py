"""What a transaction costs the server: EXEC of 100 queued INCRs against the same 100 INCRs
pipelined, in server CPU per INCR (/proc/PID/task/*/schedstat).

    python -m bench.multi [--rounds 5] [--batches 2000] [--clients 4] [--appendonly]

Each client connection sends one batch at a time and reads all its replies: either
``MULTI``, 100 ``INCR`` of distinct random keys and ``EXEC`` (the transaction), or the
same 100 ``INCR`` alone (the pipeline). The two loads run in turn within each round on
one server, so a drift in machine speed cancels in the per-round ratio; the median and
range of the ratios are printed (the issue's target: at most 1.3x). The transaction pays
for copying each request into the queue and running it from there, plus MULTI's and
EXEC's own replies and, with ``--appendonly``, the unit's B record.
"""
import argparse
import os
import random
import socket
import statistics
import sys
import tempfile
import threading

from bench.harness import ServerProcess, cpu_ns, fmt_ratio, paired_ratio

INCRS_PER_BATCH = 100


def resp(*words):
    out = [b"*%d\r\n" % len(words)]
    for word in words:
        word = str(word).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(word), word))
    return b"".join(out)


def batches(seed, count):
    """``count`` pairs (pipeline bytes, transaction bytes) of the same 100 INCRs."""
    rng = random.Random(seed)
    result = []
    for _ in range(count):
        incrs = b"".join(resp("INCR", key) for key in rng.sample(range(1_000_000), INCRS_PER_BATCH))
        result.append((incrs, resp("MULTI") + incrs + resp("EXEC")))
    return result


def run_client(address, payloads, lines_per_batch, errors):
    """Send each payload and read until its replies' lines (CRLFs) have all come."""
    try:
        with socket.create_connection(address, timeout=30) as sock:
            for payload in payloads:
                sock.sendall(payload)
                seen = 0
                while seen < lines_per_batch:
                    chunk = sock.recv(1 << 16)
                    if not chunk:
                        raise ConnectionError("closed")
                    if chunk.startswith(b"-"):
                        raise RuntimeError(chunk[:200])
                    seen += chunk.count(b"\r\n")
    except Exception as error:      # reported by the main thread
        errors.append(error)


def measure(server, per_client, transaction):
    """Server CPU nanoseconds per INCR of one load over every client's batches."""
    lines = 2 * INCRS_PER_BATCH + 2 if transaction else INCRS_PER_BATCH
    errors = []
    threads = [threading.Thread(target=run_client,
                                args=(server.address, [pair[transaction] for pair in batches_], lines, errors))
               for batches_ in per_client]
    before = cpu_ns(server.pid)
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after = cpu_ns(server.pid)
    if errors:
        raise errors[0]
    incrs = sum(len(b) for b in per_client) * INCRS_PER_BATCH
    return (after - before) / incrs


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.multi", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", type=int, default=2000, help="batches per client per load and round")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--appendonly", action="store_true", help="with the log on (--fsync no)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kvfast-bench-multi-") as folder:
        extra = ["--appendonly", os.path.join(folder, "log.aof"), "--fsync", "no"] if args.appendonly else []
        with ServerProcess("kvfast", folder, args=extra) as server:
            pipelined, transactions = [], []
            for round_ in range(args.rounds):
                per_client = [batches(round_ * 1000 + c, args.batches) for c in range(args.clients)]
                order = (False, True) if round_ % 2 == 0 else (True, False)
                for transaction in order:
                    (transactions if transaction else pipelined).append(measure(server, per_client, transaction))
            ratio = paired_ratio(transactions, pipelined)
    print(f"server CPU per INCR ({args.clients} clients, batches of {INCRS_PER_BATCH}, {args.rounds} rounds"
          f"{', log on' if args.appendonly else ''}):")
    print(f"  pipelined:   {statistics.median(pipelined):7.1f} ns (median)")
    print(f"  MULTI/EXEC:  {statistics.median(transactions):7.1f} ns (median)")
    print(f"  ratio:       {fmt_ratio(*ratio)}  (target <= 1.3x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
