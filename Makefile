# turbine-watch: `make demo` runs the main job, `make test` passes the tests.
# `make help` lists every target.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TURBINE := $(VENV)/bin/turbine
OUT ?= out
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help venv demo test test-fast lint bench clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sort | awk 'BEGIN {FS = ":.*## "}; {printf "  %-22s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,report]'
	$(PY) -m pipeline.kernels  # numba compiles the engine's kernels into its cache once
	touch $@

venv: $(STAMP) ## make the virtual environment and install the project

demo: $(STAMP) ## simulate a fleet, detect its anomalies into a store, print a summary, write the report
	mkdir -p $(OUT)/demo
	$(TURBINE) simulate --turbines 100 --steps 5000 --seed 42 \
		--output $(OUT)/demo/fleet.npz --write-config $(OUT)/demo/calibration.json
	rm -rf $(OUT)/demo/store $(OUT)/demo/report
	$(TURBINE) detect --input $(OUT)/demo/fleet.npz --config $(OUT)/demo/calibration.json \
		--store $(OUT)/demo/store
	$(TURBINE) anomalies $(OUT)/demo/store --format csv | head -n 6
	$(TURBINE) report --store $(OUT)/demo/store --input $(OUT)/demo/fleet.npz \
		--output $(OUT)/demo/report
	@echo "anomaly report: $(abspath $(OUT)/demo/report/index.html)"

lint: $(STAMP) ## ruff and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint ## lint, then every test (starts the real servers the tests need)
	$(PY) -m pytest -q

test-fast: $(STAMP) ## the tests that need no server
	$(PY) -m pytest -q -m "not kafka and not prometheus and not docker"

bench: $(STAMP) ## benchmarks (engine, quality, real SCADA, Kafka, the stack's latency and false alarms); figures go to bench/results/ and the README
	$(PY) -m bench.engine
	$(PY) -m bench.quality
	$(PY) -m bench.false_alarms
	$(PY) -m bench.scada
	$(PY) -m bench.skab
	$(PY) -m bench.kafka_e2e
	$(PY) -m bench.latency
	$(PY) -m bench.stack_false_alarms --before 42

clean: ## remove outputs (not the venv)
	rm -rf $(OUT) .pytest_cache .ruff_cache .mypy_cache

include deploy/kafka/kafka.mk
include deploy/docker/docker.mk

.PHONY: stack wheelhouse
stack: $(STAMP) ## the compose stack from local processes (Kafka, simulator, detector, Prometheus, Alertmanager); Ctrl-C stops it
	bash deploy/stack/local-stack.sh

wheelhouse: $(STAMP) ## wheels of the project and its dependencies for the Docker image (dist/wheelhouse)
	rm -rf dist/wheelhouse
	$(PY) -m pip wheel --quiet --wheel-dir dist/wheelhouse .

.PHONY: figure
figure: $(STAMP) ## the README figure (docs/skab-valve1-timeline.png): the report's timeline of SKAB valve1/9.csv
	rm -rf $(OUT)/figure
	$(TURBINE) detect --quiet --input ../shared/data/skab/valve1/9.csv --sep ';' --time-col datetime \
		--label-col anomaly --drop-col changepoint --chart mewma --mewma-lambda 0.2 --train-rows 400 \
		--store $(OUT)/figure/store
	$(TURBINE) report --store $(OUT)/figure/store --input ../shared/data/skab/valve1/9.csv --sep ';' \
		--time-col datetime --label-col anomaly --drop-col changepoint --output $(OUT)/figure/report
	mkdir -p docs
	cp $(OUT)/figure/report/timeline.png docs/skab-valve1-timeline.png

.PHONY: compose-up compose-down
compose-up: $(STAMP) ## the compose stack (2 detectors; docker compose v2 or docker-compose v1, project turbine-watch); local stand-in images where no registry answers
	bash deploy/docker/compose.sh up

compose-down: ## stop the compose stack (containers, network, volumes), and the Docker engine compose-up started unless KEEP_ENGINE=1
	bash deploy/docker/compose.sh down

KEEP_ENGINE ?= 0
FILE ?= $(OUT)/demo/fleet.npz
REPLAY_ARGS ?=

.PHONY: replay clean-cache
compose-down: export KEEP_ENGINE := $(KEEP_ENGINE)
replay: export FILE := $(FILE)
replay: export REPLAY_ARGS := $(REPLAY_ARGS)
replay: $(STAMP) ## replay FILE (default out/demo/fleet.npz) into the running stack (compose or make stack); REPLAY_ARGS: more replay options
	bash deploy/stack/replay.sh

clean-cache: ## stop the private Docker engine and remove what make test installs under ~/.cache/turbine-watch (~1.4 GB)
	-bash deploy/docker/engine.sh down
	rm -rf $${XDG_CACHE_HOME:-$$HOME/.cache}/turbine-watch

.PHONY: bench-compose soak
bench-compose: $(STAMP) ## readings/s through the compose stack beside the same stack from local processes (needs Docker; make compose-up builds the images)
	$(PY) -m bench.compose --steps 40000

soak: $(STAMP) ## 30 minutes at a steady 20,000 readings/s: RSS, store growth and lag per minute (bench/results/soak.md)
	$(PY) -m bench.soak --minutes 30
