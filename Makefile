# One place for the commands the README promises.
VENV ?= .venv
PY := $(VENV)/bin/python
REGISTRY ?= .promptrev
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run check lint test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[hf,eval,test]'
	touch $@

# The main job: the server on a local registry (bare Git repository + SQLite index),
# created and seeded from prompts/ on the first run. The first run prints the password of
# the 'admin' account it creates (or set PROMPTREV_ADMIN_PASSWORD).
run: install
	$(VENV)/bin/promptrev -r $(REGISTRY) serve --host $(HOST) --port $(PORT)

# Lint + tests: what CI runs.
check: lint test

lint: install
	$(VENV)/bin/ruff check .

test: install
	$(VENV)/bin/pytest -q

bench: install
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) $(REGISTRY) .pytest_cache .ruff_cache
