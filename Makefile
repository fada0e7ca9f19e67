# certfleet — two commands matter: `make demo` and `make test`.
# Both install what they need first (Debian packages as root, a venv with pinned versions).

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
APT_PACKAGES := pebble nginx-light knot knot-dnsutils openssh-server ca-certificates chromium
STAMP := $(VENV)/.installed

.PHONY: help setup system-packages demo test test-fast bench clean

help:  ## show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

system-packages:  ## Debian packages: Pebble, nginx, Knot, sshd, Chromium (skipped when present)
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml dev/pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]' -e ./dev
	touch $(STAMP)

setup: system-packages $(STAMP)  ## everything the demo and the tests need

demo: setup  ## the midnight incident on a local fleet (Pebble + nginx + Prefect on SQLite), fixed by one run
	$(VENV)/bin/certfleet demo

test: setup  ## the whole suite, real services included (Pebble, nginx, Knot, sshd, moto, Prefect)
	$(VENV)/bin/pytest -p no:cacheprovider

test-fast: setup  ## only the Prefect-free unit tests
	$(VENV)/bin/pytest -p no:cacheprovider -m "not services"

clean:  ## remove the venv and demo leftovers
	rm -rf $(VENV) .demo .prefect-home
