# The commands people type. `make test` is the one CI runs (see .ci/run).
PYTHON ?= python3

.PHONY: install serve develop test clean

install:            ## install kvfast (compiles the Cython extensions)
	$(PYTHON) -m pip install .

serve: install      ## install, then serve on port 5000
	kvfast-server 5000

develop:            ## editable install with the test dependencies
	$(PYTHON) -m pip install -e '.[test]'

test: develop       ## install, then run the whole test suite
	$(PYTHON) -m pytest tests

clean:
	rm -rf build dist *.egg-info kvfast/*.c kvfast/*.so kvfast/*.html
