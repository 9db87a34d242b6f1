# Every target installs what it needs: a venv in .venv, and Debian's mosquitto when missing.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

PREFIX ?= /opt/edge-agent

.PHONY: demo test lint bench model eval install-deps system-deps clean env-file install

demo: $(STAMP) system-deps
	$(BIN)/edge-agent demo

test: $(STAMP) system-deps lint
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy -p edge_agent
	$(BIN)/mypy tests bench

bench: $(STAMP) system-deps
	$(BIN)/python -m bench

model: $(STAMP)
	$(BIN)/python -m edge_agent.models.training.train

eval: $(STAMP)
	$(BIN)/python -m edge_agent.models.training.evaluate

env-file: $(STAMP)
	$(BIN)/edge-agent config env > systemd/edge-agent.env

install-deps: $(STAMP) system-deps

# On a gateway: a venv in $(PREFIX), the package into it, the unit and env files into place.
install:
	$(PYTHON) -m venv $(PREFIX)
	$(PREFIX)/bin/pip install -q --upgrade pip
	$(PREFIX)/bin/pip install -q .
	$(PREFIX)/bin/edge-agent install-service

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 or run make PYTHON=python3"; exit 1; }
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,train]'
	touch $@

# Debian packages the tests and the demo run for real: mosquitto (the broker), systemd
# (systemd-analyze checks the unit), chromium and chromium-driver (the page's tests drive a
# real headless browser; nothing is downloaded by the tests). One apt-get update, only when
# something is missing.
system-deps:
	@missing=""; \
	command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || missing="$$missing mosquitto"; \
	command -v systemd-analyze >/dev/null || missing="$$missing systemd"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	[ -x /usr/bin/chromedriver ] || missing="$$missing chromium-driver"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $$missing; \
	fi

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build *.egg-info
