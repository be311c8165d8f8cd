# `make demo`: set up .venv and run the main job on the embedded digits data (CPU, about eleven minutes on 2 cores):
#   search 3-node graphs (6 trials and ktg search's baselines independent and dml, two at a time, each trained on
#   half of the training split for 4 epochs, as many steps as --epochs 2 on all of it, and scored on the other half;
#   none pruned; then the race of the best graph and the baselines over 3 common fresh seeds, and the search's
#   verdict); then train the graph the search recommends and an independent graph the same way (3 nodes, 4 epochs,
#   seed 0, whole training split, both at once), and print their test accuracies side by side. Batch size, learning
#   rate and width are the digits' own defaults.
# `make test`: set up .venv with the test extras and run the test suite, two tests at a time, without the tests marked
#   slow (end-to-end runs of the experiment scripts and notebooks); `make test-slow` runs those. CI runs both.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-slow clean

$(BIN)/ktg: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test,grpc,export]'
	touch $@

DEMO_DATA := --dataset digits --device cpu
DEMO_EPOCHS := 4

# The search's first rung is its trials' last epoch (4): nothing is pruned, so the demo prints the same every time
# (with two workers, which trials a rung compares depends on which worker reaches it first).
# ktg search prints its leaderboard and files once, at its end. The two trainings run at once, one thread each,
# their logs in files (so their epochs do not interleave); the comparison is printed when both have finished.
demo: $(BIN)/ktg
	@set -e; out=runs/demo-$$(date +%Y%m%d-%H%M%S); \
	$(BIN)/ktg search --nodes 3 --trials 6 --epochs 2 --first-rung 4 --rescore-top 1 --rescore-seeds 3 \
		--jobs-per-device 2 $(DEMO_DATA) --out $$out/search; \
	echo; echo "== training the graph the search recommends and an independent graph the same way: 3 nodes,"; \
	echo "   $(DEMO_EPOCHS) epochs, seed 0, the whole training split (logs: $$out/best.log, $$out/independent.log)"; \
	OMP_NUM_THREADS=1 $(BIN)/ktg train --graph $$out/search/best_graph.json --epochs $(DEMO_EPOCHS) $(DEMO_DATA) \
		--out $$out/best >$$out/best.log 2>&1 & best=$$!; \
	OMP_NUM_THREADS=1 $(BIN)/ktg train --graph independent --nodes 3 --epochs $(DEMO_EPOCHS) $(DEMO_DATA) \
		--out $$out/independent >$$out/independent.log 2>&1 & independent=$$!; \
	wait $$best || { cat $$out/best.log; exit 1; }; \
	wait $$independent || { cat $$out/independent.log; exit 1; }; \
	echo; echo "== test accuracy (the search never saw the test split)"; \
	$(BIN)/ktg compare $$out/best $$out/independent --names "recommended graph" independent; \
	echo; echo "runs: $$out/best/ and $$out/independent/ (metrics.json, checkpoint.pt, tensorboard/)"

test: $(BIN)/ktg
	$(BIN)/python -m pytest -q -n 2 -m "not slow" --durations=10

test-slow: $(BIN)/ktg
	$(BIN)/python -m pytest -q -n 2 -m slow --durations=10

clean:
	rm -rf $(VENV) runs .pytest_cache
