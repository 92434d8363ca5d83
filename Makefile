# One place for the commands the README promises.
VENV ?= .venv
PY := $(VENV)/bin/python
REGISTRY ?= .promptrev

.PHONY: install run check lint test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

# The main job: a local registry (bare Git repository + SQLite index) seeded from prompts/.
run: install
	@test -e $(REGISTRY)/HEAD || $(VENV)/bin/promptrev -r $(REGISTRY) init
	$(VENV)/bin/promptrev -r $(REGISTRY) import prompts
	$(VENV)/bin/promptrev -r $(REGISTRY) list
	$(VENV)/bin/promptrev -r $(REGISTRY) fsck

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
