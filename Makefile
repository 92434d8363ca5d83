# One place for the commands the README promises.
VENV ?= .venv
PY := $(VENV)/bin/python
REGISTRY ?= .promptrev
HOST ?= 127.0.0.1
PORT ?= 8000
# Every install takes the exact versions the tests passed with (constraints.txt): a new
# upstream release never turns a fresh clone red. PIP_CONSTRAINT reaches pip's isolated
# build environments too. `make lock` refreshes the file.
EXTRAS := hf,eval,test
PIN := PIP_CONSTRAINT=$(CURDIR)/constraints.txt
# The venv's scripts (promptrev, git helpers of the tests) come first on PATH.
RUN := PATH="$(abspath $(VENV))/bin:$$PATH"

.PHONY: install run check lint test bench lock clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PIN) $(PY) -m pip install --quiet pip setuptools wheel
	$(PIN) $(PY) -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $@

# The main job: the server on a local registry (bare Git repository + SQLite index),
# created and seeded from prompts/ on the first run. The first run prints the password of
# the 'admin' account it creates (or set PROMPTREV_ADMIN_PASSWORD).
run: install
	$(RUN) promptrev -r $(REGISTRY) serve --host $(HOST) --port $(PORT)

# Lint + tests: what CI runs.
check: lint test

lint: install
	$(RUN) ruff check .
	$(RUN) lint-imports

test: install
	$(RUN) pytest -q

bench: install
	$(RUN) python bench/run_all.py

# Re-resolve every dependency to today's releases in a scratch venv and write them to
# constraints.txt; then run `make clean check` and commit the file if it passes.
lock:
	rm -rf .lock-venv
	python3 -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip setuptools wheel
	.lock-venv/bin/python -m pip install --quiet -e '.[$(EXTRAS)]'
	python3 .ci/lock.py .lock-venv/bin/python > constraints.txt
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) $(REGISTRY) .pytest_cache .ruff_cache
