# Everything installs itself: `make check` and `make demo` work on a fresh Debian 12
# machine as root, and are safe to run again.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := zfs-fuse dbus systemd systemd-container libsystemd-dev pkg-config gcc util-linux busybox-static polkitd
STAMP := $(VENV)/.installed

.PHONY: all check lint typecheck test demo bench deps apt-deps clean

all: check

apt-deps:
	@missing=""; for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "Installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "gnspawn needs Python 3.11 or newer as $(PYTHON)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

deps: apt-deps $(STAMP)

lint: deps
	$(VENV)/bin/ruff check src tests contrib $(wildcard bench)
	$(VENV)/bin/ruff format --check src

typecheck: deps
	$(VENV)/bin/mypy

test: deps
	$(PY) -m pytest -p no:cacheprovider

check: lint typecheck test

demo: deps
	$(PY) contrib/demo.py

bench: deps
	cd bench && ../$(PY) run.py

clean:
	rm -rf $(VENV) build src/*.egg-info .mypy_cache .ruff_cache
