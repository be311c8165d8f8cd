# `make demo`: set up .venv and run the main job on the embedded digits data (CPU, about a minute).
# `make test`: set up .venv with the test extras and run the test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test clean

$(BIN)/ktg: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

demo: $(BIN)/ktg
	$(BIN)/ktg train --graph dml --nodes 3 --dataset digits --epochs 6 --batch-size 32 --width 8 --device cpu --out runs/demo-$$(date +%Y%m%d-%H%M%S)

test: $(BIN)/ktg
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
