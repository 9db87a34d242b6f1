# Every target installs what it needs: a venv in .venv, and Debian's mosquitto when missing.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

PREFIX ?= /opt/edge-agent

.PHONY: demo test lint bench soak model eval install-deps system-deps clean env-file install image image-deps base-image

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

# 30 minutes of hostile load, outages and SIGKILLs (not in `make test`); SOAK_MINUTES=6 for a short proof.
soak: $(STAMP) system-deps
	$(BIN)/python -m bench.soak

# The shipped pump-fault model, then the TFLite template every learned model copies (it fails,
# naming the new sha256, where another TensorFlow builds a different file).
model: $(STAMP)
	$(BIN)/python -m edge_agent.models.training.train
	$(BIN)/python -m edge_agent.models.training.learned_template

eval: $(STAMP)
	$(BIN)/python -m edge_agent.models.training.evaluate

env-file: $(STAMP)
	$(BIN)/edge-agent config env > systemd/edge-agent.env

install-deps: $(STAMP) system-deps

# On a gateway: a venv in $(PREFIX), the package into it, the unit and env files into place.
install:
	$(PYTHON) -m venv $(PREFIX)
	$(PREFIX)/bin/pip install -q --upgrade pip
	$(PREFIX)/bin/pip install -q '.[learn]'
	$(PREFIX)/bin/edge-agent install-service

# The container image: Debian's podman builds the Dockerfile over a base given as PYTHON_IMAGE
# (vfs storage and chroot isolation: no daemon, no overlay, no user namespaces needed). Where no
# registry is reachable the base is made here: Debian bookworm (Python 3.11) by debootstrap
# from the mirror apt uses, imported into podman. pip in the build trusts this machine's CA
# bundle (a build secret; it stays out of the image). tests/test_image.py then inspects it.
IMAGE         ?= localhost/edge-agent:latest
BASE_IMAGE    ?= localhost/edge-agent-base:bookworm
PODMAN        := podman --storage-driver vfs
PIP_CA        ?= /etc/ssl/certs/ca-certificates.crt
DEBIAN_MIRROR ?= $(shell sed -n -e 's/^URIs: *//p' -e 's/^deb \(\[[^]]*\] \)*\([^ ]*\) .*/\2/p' \
	/etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null | tr ' ' '\n' | \
	grep -m1 '/debian/*$$' || echo http://deb.debian.org/debian)
comma := ,

image: $(STAMP) image-deps
	@$(PODMAN) image exists $(BASE_IMAGE) || $(MAKE) --no-print-directory base-image
	$(PODMAN) build --isolation chroot --format docker --build-arg PYTHON_IMAGE=$(BASE_IMAGE) \
		$(if $(wildcard $(PIP_CA)),--secret id=pip-ca$(comma)src=$(PIP_CA)) -t $(IMAGE) .
	IMAGE_UNDER_TEST=$(IMAGE) $(BIN)/pytest -p no:cacheprovider tests/test_image.py
	$(PODMAN) image prune -f >/dev/null  # vfs keeps whole copies: drop the replaced ones

base-image: image-deps
	@echo "making $(BASE_IMAGE): debootstrap bookworm from $(DEBIAN_MIRROR)"
	$(SUDO) rm -rf $(CURDIR)/build/base-rootfs
	mkdir -p $(CURDIR)/build
	$(SUDO) debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
		bookworm $(CURDIR)/build/base-rootfs $(DEBIAN_MIRROR)
	$(SUDO) tar -C $(CURDIR)/build/base-rootfs -c . | \
		$(PODMAN) import --change 'CMD ["/bin/bash"]' - $(BASE_IMAGE)
	$(SUDO) rm -rf $(CURDIR)/build/base-rootfs

# Debian packages `make image` needs: podman, and debootstrap for the base.
image-deps:
	@missing=""; \
	command -v podman >/dev/null || missing="$$missing podman"; \
	command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || missing="$$missing debootstrap"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $$missing; \
	fi

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
