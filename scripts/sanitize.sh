#!/usr/bin/env bash
# Build kvfast with AddressSanitizer + UndefinedBehaviorSanitizer in a scratch
# copy of this tree and run the test suite against it. The editable install in
# this checkout is not touched: the copy gets its own venv and its own build.
#
#   scripts/sanitize.sh                       # the whole suite: pytest tests -q
#   scripts/sanitize.sh tests/test_resp.py -x # any pytest arguments instead
#   KEEP=1 scripts/sanitize.sh                # keep the scratch directory afterwards
#   WORKDIR=/tmp/kvfast-asan scripts/sanitize.sh   # use (and keep) this directory
#   REF=HEAD scripts/sanitize.sh              # a commit instead of the working tree
#
# Exits non-zero if the build fails, a test fails, or any sanitizer wrote a
# report. Reports go to files (ASAN/UBSAN log_path), so a report from a
# kvfast-server subprocess whose stderr a test swallows is still caught; they
# are printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if [[ -n "${WORKDIR:-}" ]]; then
    KEEP=1
    mkdir -p "$WORKDIR"
    WORKDIR=$(cd "$WORKDIR" && pwd)
else
    WORKDIR=$(mktemp -d "${TMPDIR:-/tmp}/kvfast-sanitize.XXXXXX")
fi
cleanup() { [[ "${KEEP:-0}" == 1 ]] || rm -rf "$WORKDIR"; }
trap cleanup EXIT

TREE=$WORKDIR/tree
REPORTS=$WORKDIR/reports
rm -rf "$TREE" "$REPORTS"
mkdir -p "$TREE" "$REPORTS"
if [[ -n "${REF:-}" ]]; then
    echo "== copy commit $REF to $TREE"
    git archive "$REF" | tar -xf - -C "$TREE"
else
    echo "== copy tracked and untracked non-ignored files to $TREE"
    git ls-files -z --cached --others --exclude-standard \
        | while IFS= read -r -d '' f; do [[ -e "$f" ]] && printf '%s\0' "$f"; done \
        | tar --null -T - -cf - | tar -xf - -C "$TREE"
fi

# --without-pip: the venv's own (old) setuptools would shadow the one pyproject.toml needs;
# pip, setuptools, Cython, pytest, hypothesis and redis all come from the system site-packages.
echo "== venv with system site-packages"
[[ -x "$WORKDIR/venv/bin/python" ]] || "$PYTHON" -m venv --system-site-packages --without-pip "$WORKDIR/venv"
VPY=$WORKDIR/venv/bin/python

echo "== build with KVFAST_SANITIZE=1 (log: $WORKDIR/build.log)"
build_start=$(date +%s)
(cd "$TREE" && KVFAST_SANITIZE=1 "$VPY" -m pip install --no-build-isolation --no-deps -e . \
    >"$WORKDIR/build.log" 2>&1) || { tail -50 "$WORKDIR/build.log"; exit 1; }
echo "   built in $(( $(date +%s) - build_start )) s"

ASAN_LIB=$(gcc -print-file-name=libasan.so)
UBSAN_LIB=$(gcc -print-file-name=libubsan.so)
[[ -e "$ASAN_LIB" && -e "$UBSAN_LIB" ]] || { echo "libasan.so/libubsan.so not found (gcc)" >&2; exit 1; }

# Inherited by every subprocess the tests start (kvfast-server, kvfast-client,
# redis-cli, ...): they all build their environment from os.environ. An
# instrumented extension cannot even be imported without libasan preloaded
# ("ASan runtime does not come first in initial library list").
# Leak detection is off: CPython's own allocations at exit drown real reports.
# The quarantine of freed memory (use-after-free detection) is cut from 256 MB
# to 16 MB: at 256 MB it alone grows RSS by ~230 MB in the tests that bound the
# server's RSS (an output buffer doubling through realloc frees every old one).
export LD_PRELOAD="$ASAN_LIB $UBSAN_LIB"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:quarantine_size_mb=16:log_path=$REPORTS/asan:log_exe_name=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$REPORTS/ubsan:log_exe_name=1"
export PATH="$WORKDIR/venv/bin:$PATH"

# Guards: kvfast comes from the copy and is instrumented, and a kvfast-server
# started as the tests start it runs with libasan and those extensions.
(cd / && "$VPY" - "$TREE" <<'PY'
import os, subprocess, sys
tree = sys.argv[1]
import kvfast._loop as loop
assert loop.__file__.startswith(tree + "/"), f"kvfast imported from {loop.__file__}, not {tree}"
assert b"__asan_init" in open(loop.__file__, "rb").read(), "extension is not built with ASan"
server = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "kvfast-server"), "0"],
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
try:
    line = server.stdout.readline()
    assert b"listening" in line, (line, server.stderr.read())
    maps = open(f"/proc/{server.pid}/maps").read()
    assert "libasan" in maps, "kvfast-server runs without libasan"
    assert f"{tree}/kvfast/_loop" in maps, "kvfast-server does not use the sanitized build"
    print(f"   kvfast-server (pid {server.pid}) runs with libasan and {tree}/kvfast/*.so")
finally:
    server.terminate()
    server.wait(10)
PY
)

if (($#)); then args=("$@"); else args=(tests -q); fi
echo "== pytest ${args[*]}"
start=$(date +%s)
status=0
(cd "$TREE" && "$VPY" -m pytest -p no:cacheprovider "${args[@]}") || status=$?
echo "== pytest exit status $status after $(( $(date +%s) - start )) s"

mapfile -t reports < <(find "$REPORTS" -type f | sort)
if ((${#reports[@]})); then
    echo "== ${#reports[@]} SANITIZER REPORT(S)"
    for report in "${reports[@]}"; do
        echo "---- $report"
        cat "$report"
    done
    [[ $status != 0 ]] || status=1
else
    echo "== no sanitizer reports"
fi
exit "$status"
