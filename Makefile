# Every target installs what it needs: a venv in .venv, and Debian's mosquitto when missing.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint bench model eval install-deps mosquitto clean env-file

demo: $(STAMP) mosquitto
	$(BIN)/edge-agent demo

test: $(STAMP) mosquitto lint
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@rm -rf .typecheck && mkdir -p .typecheck/edge_agent
	@for d in daemon connectors models rules simulator; do ln -s ../../$$d .typecheck/edge_agent/$$d; done
	cd .typecheck && MYPYPATH=. ../$(BIN)/mypy --config-file ../pyproject.toml -p edge_agent
	MYPYPATH=.typecheck $(BIN)/mypy tests bench

bench: $(STAMP) mosquitto
	$(BIN)/python -m bench

model: $(STAMP)
	$(BIN)/python -m edge_agent.models.train

eval: $(STAMP)
	$(BIN)/python -m edge_agent.models.evaluate

env-file: $(STAMP)
	$(BIN)/edge-agent config env > systemd/edge-agent.env

install-deps: $(STAMP) mosquitto

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 or run make PYTHON=python3"; exit 1; }
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,train]'
	touch $@

mosquitto:
	@if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then \
		echo "installing Debian's mosquitto"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq mosquitto; \
	fi

clean:
	rm -rf $(VENV) .typecheck .mypy_cache .ruff_cache .pytest_cache build *.egg-info
