# The commands people type. `make test` is the one CI runs (see .ci/run).
PYTHON ?= python3
BASE ?= HEAD~1

.PHONY: install serve develop test lint sanitize soak compare transport floor versus bench growth persistence pyclient clean

install:            ## install kvfast (compiles the Cython extensions)
	$(PYTHON) -m pip install .

serve: install      ## install, then serve on port 5000
	kvfast-server 5000

develop:            ## editable install with the test dependencies
	$(PYTHON) -m pip install -e '.[test]'

test: develop       ## install, then run the whole test suite
	$(PYTHON) -m pytest tests

# The `lint` extra of pyproject.toml, installed alone (no rebuild of kvfast for it).
LINTERS = 'ruff>=0.4' 'cython-lint>=0.16'
# The interpreter's scripts folder: cython-lint is run from there, and it runs pycodestyle by name.
SCRIPTS = $(shell $(PYTHON) -c 'import sysconfig; print(sysconfig.get_path("scripts"))')

lint:               ## ruff on the Python code, cython-lint on kvfast/*.pyx and *.pxd (settings in pyproject.toml)
	$(PYTHON) -m pip install --quiet $(LINTERS)
	$(PYTHON) -m ruff check kvfast tests bench examples scripts setup.py
	PATH="$(SCRIPTS):$$PATH" cython-lint kvfast/*.pyx kvfast/*.pxd

sanitize: develop   ## the test suite against an ASan+UBSan build (in a scratch copy of the tree)
	PYTHON=$(PYTHON) scripts/sanitize.sh

soak: develop       ## 5,000 connections churning for 60 s, then fds, RSS and every value checked
	$(PYTHON) -m bench.soak --seconds 60 --connections 5000

compare: develop    ## kvfast vs redis-server vs asyncio -> docs/benchmarks.md, docs/benchmarks.png
	$(PYTHON) -m bench.compare --publish

transport: develop  ## unix socket vs TCP, kvfast and redis-server, server CPU/request at P1 and P16 -> docs/transport.md
	$(PYTHON) -m bench.transport --publish

floor: develop      ## kvfast next to a bare epoll server (the syscalls alone) and Redis / the asyncio reference, pipeline 1
	$(PYTHON) -m bench.floor

versus: develop     ## this tree's build vs commit BASE's (default HEAD~1) in alternating rounds: CPU/request, requests/s
	$(PYTHON) -m bench.versus --base $(BASE)

bench: develop      ## pytest-benchmark load and store runs (KVFAST_BENCH_QUICK=1 for a smoke run)
	$(PYTHON) -m pip install -e '.[bench]'
	$(PYTHON) -m pytest bench/test_load.py

growth: develop     ## grow from 0 to 50M keys under load: latency and per-request migration
	$(PYTHON) bench/growth.py --keys 50000000

persistence: develop ## the append-only file: throughput off/no/everysec/always, replay of 10M records, rewrite pause
	$(PYTHON) -m bench.persistence --json bench/results/persistence.json | tee docs/persistence.md

pyclient: develop    ## kvfast.Client's bulk calls vs redis-py + hiredis (MGET, MSET, pipelines), TCP and unix socket
	$(PYTHON) -m bench.python_client --rounds 5

clean:
	rm -rf build dist *.egg-info kvfast/*.c kvfast/*.so kvfast/*.html
