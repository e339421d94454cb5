"""This tree's build against an earlier commit's, side by side in one session.

    python -m bench.versus [--base REV] [--rounds 5] [--requests N] [--loads KEY,...] [--json PATH]

The project's rule: a change that touches the hot path is compared with the
build before it, both run in the same session, in alternating rounds. This
does that. It checks REV (default HEAD~1) out into a temporary git worktree
(``git worktree add --detach``), builds its extensions in place there with this
interpreter (``setup.py build_ext --inplace``, which needs Cython), and starts
both builds as kvfast-server processes: ``python -m kvfast.server_cli`` with
the build's own tree first on PYTHONPATH (checked before the run: each imports
its own tree's extensions; this tree's must not be older than their sources).
Then bench.compare's loads run on both, 50 clients, random keys in a 1M
keyspace: RESP ``SET NX`` and ``GET`` (redis-benchmark) and native set and get
(kvfast-bench), pipeline 1 and 16. In each round every load runs on one build
then the other, and which goes first swaps every round; a set load first
empties the store, and the get load after it reads what it wrote. The
worktree is removed at the end, also after an error, Ctrl-C or SIGTERM.

Per load it prints, as Markdown, the medians of each build's server CPU per
request (utime+stime from /proc/PID/stat over the run, as bench.compare) and
requests/s, and new ÷ old as the median of the per-round ratios, with their
range: below 1.00 µs/req is an improvement, and a ratio whose range straddles
1.00 is within the noise.
"""
import argparse
import contextlib
import glob
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from bench.compare import CLIENTS, FULL, KEYSPACE, LOADS, log, median_summary
from bench.harness import (REPO, BenchError, ServerProcess, find_program, fmt_ratio,
                           install_sigterm_handler, paired_ratio, with_server_cpu)

DEFAULT_BASE = "HEAD~1"
BUILD_TIMEOUT = 900.0
# Each build's server: its own tree's kvfast, whatever is installed.
SERVER_MODULE = "kvfast.server_cli"
CHECK_IMPORT = "import kvfast._loop, kvfast._store; print(kvfast._loop.__file__); print(kvfast._store.__file__)"


def git(*args, timeout=120):
    """Run git in this tree; its output, or BenchError."""
    result = subprocess.run(["git", "-C", REPO, *args], stdin=subprocess.DEVNULL, capture_output=True,
                            text=True, timeout=timeout)
    if result.returncode != 0:
        raise BenchError(f"git {' '.join(args)}: {result.stderr.strip()[-500:]}")
    return result.stdout.strip()


@contextlib.contextmanager
def worktree(rev, path):
    """A detached worktree of ``rev`` at ``path``, removed on the way out."""
    try:
        git("worktree", "add", "--detach", "--quiet", path, rev)
        yield path
    finally:
        try:
            git("worktree", "remove", "--force", path)
        except (BenchError, OSError, subprocess.TimeoutExpired):
            shutil.rmtree(path, ignore_errors=True)
            subprocess.run(["git", "-C", REPO, "worktree", "prune"], capture_output=True, timeout=60)


class Build:
    """One tree's kvfast: ``name`` (old or new), the tree, and how its server starts."""

    def __init__(self, name, tree, label):
        self.name, self.tree, self.label = name, tree, label
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            filter(None, [tree, os.environ.get("PYTHONPATH")])))
        self.env.pop("KVFAST_SANITIZE", None)

    def build(self, log_dir):
        """Compile the tree's extensions in place (for the old tree)."""
        if importlib.util.find_spec("Cython") is None:
            raise BenchError(f"building {self.label} needs Cython in this interpreter: "
                             f"{sys.executable} -m pip install 'Cython>=3'")
        path = os.path.join(log_dir, f"build-{self.name}.log")
        argv = [sys.executable, "setup.py", "build_ext", "--inplace", "-q", "-j", str(os.cpu_count() or 1)]
        with open(path, "wb") as output:
            try:
                status = subprocess.run(argv, cwd=self.tree, env=self.env, stdin=subprocess.DEVNULL,
                                        stdout=output, stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT).returncode
            except subprocess.TimeoutExpired:
                status = "a timeout"
        if status != 0:
            with open(path, errors="replace") as output:
                raise BenchError(f"building {self.label} failed ({status}): {output.read()[-1500:]}")

    def check(self, log_dir):
        """The server will import this tree's extensions, and they are built."""
        result = subprocess.run([sys.executable, "-c", CHECK_IMPORT], cwd=log_dir, env=self.env,
                                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise BenchError(f"{self.label}: kvfast does not import: {result.stderr.strip()[-500:]}")
        package = os.path.join(os.path.realpath(self.tree), "kvfast") + os.sep
        for module in result.stdout.split():
            if not os.path.realpath(module).startswith(package):
                raise BenchError(f"{self.label}: imports {module}, not its own tree's {package}")
        for source in glob.glob(os.path.join(self.tree, "kvfast", "*.pyx")):
            stem = source[:-len(".pyx")]
            built = glob.glob(stem + ".*.so")
            sources = [path for path in (source, stem + ".pxd") if os.path.exists(path)]
            if not built or max(map(os.path.getmtime, sources)) > os.path.getmtime(built[0]):
                raise BenchError(f"{self.label}: {os.path.relpath(source, self.tree)} is newer than its "
                                 "build: rebuild first (make develop, or pip install -e .)")

    def start(self, log_dir):
        return ServerProcess("kvfast", log_dir, name=f"server-{self.name}", env=self.env,
                             command=[sys.executable, "-m", SERVER_MODULE])


def measure(builds, loads, rounds, requests, log_dir):
    """Every load on each build in turn, ``rounds`` times, the first build of a
    round swapping every round; returns {load key: {build name: [run, ...]}}."""
    runs = {load.key: {build.name: [] for build in builds} for load in loads}
    servers = {}
    try:
        for build in builds:
            servers[build.name] = build.start(log_dir)
        for repeat in range(rounds):
            order = builds if repeat % 2 == 0 else builds[::-1]
            for load in loads:
                for build in order:
                    server = servers[build.name]
                    if load.writes:
                        server.flush()
                    result = with_server_cpu(server.pid, lambda: load.run(server, requests[load.pipeline]))
                    result["repeat"], result["first"] = repeat, build is order[0]
                    runs[load.key][build.name].append(result)
                    log(f"  round {repeat + 1}/{rounds} {load.label:<16} {build.name:<4}"
                        f"{result['requests_per_second']:>12,.0f} req/s "
                        f"{result['server_cpu_us_per_request']:>7.2f} us/req")
    finally:
        for server in servers.values():
            server.close()
    return runs


def summarise(runs, loads):
    """Per load: each build's medians and the new ÷ old per-round ratios."""
    summary = {}
    for load in loads:
        old, new = runs[load.key]["old"], runs[load.key]["new"]
        entry = {"label": load.label, "old": median_summary(old), "new": median_summary(new)}
        for name in ("server_cpu_us_per_request", "server_cpu_us_per_request_schedstat",
                     "requests_per_second"):
            if not all(run.get(name) is not None for run in old + new):
                continue
            ratio, low, high = paired_ratio([run[name] for run in new], [run[name] for run in old])
            entry[f"{name}_ratio"] = {"median": ratio, "range": [low, high]}
        summary[load.key] = entry
    return summary


def markdown(report):
    settings, old, new = report["settings"], report["old"], report["new"]
    requests = sorted(set(settings["requests"].values()))
    lines = [f"new: {new['label']}; old: {old['label']}, built in a temporary worktree. "
             f"{settings['rounds']} round{'s' if settings['rounds'] != 1 else ''} of "
             f"{' / '.join(f'{n:,}' for n in requests)} requests per run, {settings['clients']} clients, "
             f"random keys in {settings['keyspace']:,}. Medians; new ÷ old is the median of the "
             "per-round ratios (range in brackets). Server CPU is counted in clock ticks "
             "(/proc/PID/stat), so runs of well under a second of it are coarse.",
             "",
             "| load | old µs/req | new µs/req | new ÷ old µs/req | old req/s | new req/s | new ÷ old req/s |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for entry in report["summary"].values():
        cpu, rps = entry["server_cpu_us_per_request_ratio"], entry["requests_per_second_ratio"]
        lines.append(f"| {entry['label']} | {entry['old']['server_cpu_us_per_request']:.2f} | "
                     f"{entry['new']['server_cpu_us_per_request']:.2f} | {fmt_ratio(cpu['median'], *cpu['range'])} | "
                     f"{entry['old']['requests_per_second']:,.0f} | {entry['new']['requests_per_second']:,.0f} | "
                     f"{fmt_ratio(rps['median'], *rps['range'])} |")
    return "\n".join(lines)


def tree_label():
    """This tree's commit, and whether kvfast's sources differ from it."""
    commit = git("rev-parse", "--short", "HEAD")
    dirty = git("status", "--porcelain", "--", "kvfast", "setup.py", "pyproject.toml")
    return f"{commit}{' + uncommitted changes' if dirty else ''}"


def select_loads(text):
    if not text:
        return list(LOADS)
    keys = {load.key.lower(): load for load in LOADS}
    wanted = [word.strip().lower() for word in text.split(",") if word.strip()]
    unknown = [word for word in wanted if word not in keys]
    if unknown:
        raise ValueError(f"unknown load(s) {', '.join(unknown)}; the loads are {', '.join(load.key for load in LOADS)}")
    return [load for load in LOADS if load.key.lower() in wanted]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.versus", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default=DEFAULT_BASE, help=f"the old build's commit (default {DEFAULT_BASE})")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of all loads on both builds (default 5)")
    parser.add_argument("--requests", type=int,
                        help=f"requests per run (default {FULL['requests'][1]:,} at P1, "
                             f"{FULL['requests'][16]:,} at P16)")
    parser.add_argument("--loads", help="comma-separated load keys, e.g. native-get-P1,resp-setnx-P16 "
                                        "(default all; a get load without its set load reads an empty store)")
    parser.add_argument("--json", metavar="PATH", help="also write the runs and summary as JSON")
    args = parser.parse_args(argv)
    try:
        loads = select_loads(args.loads)
    except ValueError as error:
        parser.error(str(error))
    if args.rounds < 1 or (args.requests is not None and args.requests < 1):
        parser.error("--rounds and --requests must be at least 1")
    requests = {pipeline: args.requests or count for pipeline, count in FULL["requests"].items()}
    install_sigterm_handler()
    started = time.monotonic()
    workdir = tempfile.mkdtemp(prefix="kvfast-versus-")
    try:
        for program in {load.tool for load in loads}:
            find_program(program)           # a clear error now rather than after the build
        base = git("rev-parse", "--short", "--verify", f"{args.base}^{{commit}}")
        new = Build("new", REPO, f"this tree ({tree_label()})")
        new.check(workdir)
        with worktree(base, os.path.join(workdir, "tree")) as tree:
            old = Build("old", tree, f"{args.base} ({base})" if args.base != base else base)
            log(f"building {old.label} in {tree}")
            old.build(workdir)
            old.check(workdir)
            log(f"{len(loads)} load(s) x {args.rounds} round(s), old and new alternating")
            runs = measure([old, new], loads, args.rounds, requests, workdir)
    except BenchError as error:
        print(f"bench.versus: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench.versus: interrupted (servers stopped, worktree removed)", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report = {"old": {"rev": args.base, "commit": base, "label": old.label},
              "new": {"commit": git("rev-parse", "--short", "HEAD"), "label": new.label},
              "settings": {"rounds": args.rounds, "requests": requests, "clients": CLIENTS,
                           "keyspace": KEYSPACE, "loads": [load.key for load in loads]},
              "runs": runs, "summary": summarise(runs, loads), "seconds": time.monotonic() - started}
    print(markdown(report))
    if args.json:
        with open(args.json, "w") as file:
            json.dump(report, file, indent=2)
    log(f"done in {report['seconds']:.0f} s" + (f"; wrote {args.json}" if args.json else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
