# `make demo`: set up .venv and run the main job on the embedded digits data (CPU, a few minutes): search for the
#   3-node graph whose ensemble is most accurate on a held-out part of the training split, retrain the best graph on
#   the whole training split, then print the leaderboard and where the files are.
# `make test`: set up .venv with the test extras and run the test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test clean

$(BIN)/ktg: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test,export]'
	touch $@

DEMO_OPTIONS := --dataset digits --batch-size 32 --device cpu

demo: $(BIN)/ktg
	@set -e; out=runs/demo-$$(date +%Y%m%d-%H%M%S); \
	$(BIN)/ktg search --nodes 3 --width 8 --trials 6 --epochs 3 $(DEMO_OPTIONS) --out $$out/search; \
	echo; echo "== retraining the best graph on the whole training split, tested on the test split"; \
	$(BIN)/ktg train --graph $$out/search/best_graph.json --epochs 5 $(DEMO_OPTIONS) --no-progress --out $$out/best; \
	echo; echo "== leaderboard of the search (ensemble accuracy on the held-out part of the training split)"; \
	$(BIN)/ktg study show --storage $$out/search --top 6; \
	echo; echo "== files"; \
	echo "  $$out/search/best_graph.json   the best graph (ktg train --graph FILE retrains it on any dataset)"; \
	echo "  $$out/search/leaderboard.csv   every trial, best first"; \
	echo "  $$out/search/trials/<n>/       each trial's run: graph.json, metrics.jsonl, tensorboard/"; \
	echo "  $$out/search/study.db          the study: ktg study show --storage $$out/search, or optuna-dashboard sqlite:///$$out/search/study.db"; \
	echo "  $$out/best/                    the retrained best graph: metrics.json, checkpoint.pt, tensorboard/"

test: $(BIN)/ktg
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
