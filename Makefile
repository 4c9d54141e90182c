PY ?= .venv/bin/python
.PHONY: install test test-slow lint run smoke clean bench bench-scale tables

install:  ## create .venv and install the package with dev and baseline extras (CPU torch pinned)
	python3 -m venv .venv
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e ".[dev,baselines]"

test:  ## the default suite (fast, offline)
	$(PY) -m pytest -q

test-slow:  ## multi-process, sweep and end-to-end tests
	$(PY) -m pytest -q -m slow

lint:
	$(PY) -m ruff check llm2labels tests experiments benchmarks run.py

run:  ## the embedded default: real photos, offline ImageNet classifier
	$(PY) run.py

smoke:  ## the tiny random InstructBLIP on two embedded photos
	$(PY) run.py debug=smoke

clean:
	rm -rf outputs .pytest_cache

bench:  ## benchmarks that print figures (no timed assertions): proposal overhead, prefill, post-processing, evaluation
	$(PY) -m benchmarks.run_all
	$(PY) -m benchmarks.eval_speed

bench-scale:  ## the sample store at 100k and 1M images, then post-processing from parsed columns at 1M (writes ~10 GB once under $TMPDIR; ~25 min the first time)
	$(PY) -m benchmarks.store_scale --images 1000000
	$(PY) -m benchmarks.columns_bench --images 1000000

tables:  ## the paper's tables from a sweep: make tables SWEEP=outputs/multirun/table2/<time>
	$(PY) -m experiments.tables $(SWEEP)
