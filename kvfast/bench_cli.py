"""``kvfast-bench``: a load generator for kvfast (and any Redis-protocol server).

    kvfast-bench -h 127.0.0.1 -p 5000 -c 50 -n 100000 -P 16 -r 1000000 -t set,get
    kvfast-bench --protocol resp -p 6379 -t get --json
    kvfast-bench -s /tmp/kvfast.sock -P 16 -t get

Options follow redis-benchmark's. Each test prints one line with requests per
second and latency percentiles (p50, p99, p99.9, max, from a histogram with
0.4% wide buckets); ``--json`` prints one JSON object per test instead.
"""
import argparse
import json
import sys

from kvfast.cli import OneLineErrorParser, raise_open_file_limit
from kvfast._bench import OPERATIONS, LoadGenerator
from kvfast.bench_python import run_python_load

PROG = "kvfast-bench"


def positive(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def tests(text):
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in OPERATIONS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown test {', '.join(unknown) or text!r}; choose from {','.join(OPERATIONS)}")
    return names


def build_parser():
    parser = OneLineErrorParser(prog=PROG, description=__doc__, add_help=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--help", action="help", help="show this help and exit")
    parser.add_argument("-h", dest="host", default="127.0.0.1", help="server address (IPv4; default 127.0.0.1)")
    parser.add_argument("-p", dest="port", type=int, default=5000, help="server port (default 5000)")
    parser.add_argument("-s", dest="socket", metavar="PATH", default=None,
                        help="connect to this unix domain socket instead of -h/-p (as redis-benchmark)")
    parser.add_argument("-c", dest="clients", type=positive, default=50, help="parallel connections (default 50)")
    parser.add_argument("-n", dest="requests", type=positive, default=100_000,
                        help="requests per test (default 100000)")
    parser.add_argument("-P", dest="pipeline", type=positive, default=1,
                        help="requests per batch on each connection (default 1: no pipelining)")
    parser.add_argument("-r", dest="keyspace", type=positive, default=1_000_000,
                        help="keys (and values) are random in 0..KEYSPACE-1 (default 1000000)")
    parser.add_argument("--sequential", action="store_true",
                        help="keys 0, 1, 2, ... (modulo KEYSPACE) instead of random: with put, "
                             "every request adds a new key")
    parser.add_argument("-t", dest="tests", type=tests, default=["set", "get"],
                        help=f"comma-separated tests: {','.join(OPERATIONS)} (default set,get); "
                             "mixed is 80%% get, 20%% set")
    parser.add_argument("--protocol", choices=("native", "resp"), default="native",
                        help="native text lines, or RESP as redis-benchmark sends (default native)")
    parser.add_argument("--client", choices=("c", "python"), default="c",
                        help="c: the compiled load generator (default); python: kvfast.Client, one thread per "
                             "connection, its bulk calls (get_many ...) for -P > 1 (native protocol only)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per test")
    parser.add_argument("-q", dest="quiet", action="store_true", help="no progress line")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds allowed per test (default 300)")
    return parser


def summary(result):
    latency = result["latency_ms"]
    line = (f"{result['test']}: {result['requests_per_second']:.2f} requests per second, "
            f"p50={latency['p50']:.3f} p99={latency['p99']:.3f} p99.9={latency['p99.9']:.3f} "
            f"max={latency['max']:.3f} msec")
    if result["errors"]:
        line += f", {result['errors']} error replies"
    if "client_cpu_us_per_request" in result:
        line += f", client CPU {result['client_cpu_us_per_request']:.3f} us/request"
    return line


def main(argv=None) -> int:
    """Run each test in turn; exit 0, or 1 on a bad argument or a failed run."""
    args = build_parser().parse_args(argv)
    raise_open_file_limit()
    for name in args.tests:
        try:
            if args.client == "python":
                if args.protocol == "resp":
                    raise ValueError("--client python speaks the native protocol only")
                result = run_python_load(args.host, args.port, args.socket, name, args.clients, args.pipeline,
                                         args.requests, args.keyspace, args.timeout, args.sequential)
                print(json.dumps(result) if args.json else summary(result), flush=True)
                continue
            generator = LoadGenerator(args.host, args.port, name, args.protocol == "resp", args.clients,
                                      args.pipeline, args.requests, args.keyspace, args.timeout,
                                      not args.quiet and not args.json, args.sequential,
                                      unix_socket_path=args.socket)
            result = generator.run()
        except (OSError, ValueError) as error:
            print(f"{PROG}: error: {error}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 130
        print(json.dumps(result) if args.json else summary(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
