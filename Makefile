# The two commands of the README: `make demo` and `make test`. Both set up everything they need.
# `make test-fast` runs the unit tests only.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.edgetune-installed
DEMO_DEBS := dataset-fashion-mnist
TEST_DEBS := dataset-fashion-mnist postgresql chromium chromium-driver
DEMO_SPEC := experiments/fashion_mnist/resnet8_host.yaml
DEMO_STUDY := demo-$(shell date +%Y%m%d-%H%M%S)

.PHONY: setup test-setup demo test test-fast lint clean

setup: $(STAMP)
	@$(MAKE) --no-print-directory debs DEBS="$(DEMO_DEBS)"

test-setup: $(STAMP)
	@$(MAKE) --no-print-directory debs DEBS="$(TEST_DEBS)"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# Debian packages, installed when missing: with apt-get as root, or through sudo.
.PHONY: debs
debs:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi; \
	  echo "installing Debian packages:$$missing"; \
	  $$sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -q $$missing; \
	fi

# The search finalizes its best trial (the spec's finalize: section, without the fastest trial
# it finalizes too: about 5 minutes less on 2 cores); the export prints it beside the teacher.
demo: setup
	$(BIN)/edgetune search $(DEMO_SPEC) --study $(DEMO_STUDY) --set constraints.latency_ms=50% \
	  --set finalize.fastest=0
	$(BIN)/edgetune export $(DEMO_STUDY) --out .edgetune/exports/$(DEMO_STUDY)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy search spaces cost_models targets experiments tests

test: test-setup lint
	tests/offline.sh $(BIN)/pytest -q

# The unit tests (no `slow` marker: no Ray, no search end to end, no calibration of this
# machine), for the development loop.
test-fast: setup lint
	$(BIN)/pytest -q -m "not slow"

clean:
	rm -rf $(VENV) .edgetune .mypy_cache .ruff_cache .pytest_cache
