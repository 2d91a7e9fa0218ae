# The two commands of the README: `make demo` and `make test`. Both set up everything they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.edgetune-installed
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
DEMO_SPEC := experiments/fashion_mnist/resnet8_host.yaml
DEMO_STUDY := demo-$(shell date +%Y%m%d-%H%M%S)

.PHONY: setup demo test lint clean

setup: $(STAMP) $(FASHION_MNIST)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# Debian packages: installed with apt-get as root, or through sudo.
$(FASHION_MNIST):
	@if [ "$$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi; \
	$$sudo apt-get update -q && $$sudo apt-get install -y -q dataset-fashion-mnist

demo: setup
	$(BIN)/edgetune search $(DEMO_SPEC) --study $(DEMO_STUDY)
	$(BIN)/edgetune export $(DEMO_STUDY) --out .edgetune/exports/$(DEMO_STUDY)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy search spaces cost_models targets experiments

test: lint
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) .edgetune .mypy_cache .ruff_cache .pytest_cache
