# liferaft — `make iso` and `make test` are the two commands README.md promises.
SHELL := /bin/bash
PROFILE ?= default
VENV := .venv
PY := $(VENV)/bin/python
# Debian's python3: pyparted comes from python3-parted, seen through system site-packages.
HOST_PYTHON := /usr/bin/python3
APT_PACKAGES := $(shell sed -e 's/\#.*//' deps/apt-host.txt | tr '\n' ' ')

.PHONY: setup apt venv test test-fast lint bench iso netboot deb clean

setup: apt venv

# Idempotent: asks apt only for packages that are not installed yet.
apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "setup: installing Debian packages: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

venv: $(VENV)/.stamp

$(VENV)/.stamp: pyproject.toml
	@test -x $(PY) || $(HOST_PYTHON) -m venv --system-site-packages $(VENV)
	env -u PIP_REQUIRE_VIRTUALENV $(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

# The fast tests first: a failure there stops the run before the QEMU boots.
# Meanwhile tests/prebuild.py builds the rescue ISO and the drill's roots in
# the background (its own session, killed if the fast tests fail; its log is
# build/prebuild.log). The slow tests on two workers, a file each at a time,
# longest first (tests/conftest.py SLOW_FIRST): two guests side by side keep
# both cores busy.
SLOW_WORKERS ?= 2
test: setup
	@mkdir -p build
	@setsid $(PY) -m tests.prebuild > build/prebuild.log 2>&1 & prebuild=$$!; \
	trap 'kill -- -$$prebuild 2>/dev/null' EXIT; trap 'exit 130' INT TERM; \
	$(PY) -m pytest -q -m 'not slow' --durations=15 || exit 1; \
	echo "make test: waiting for tests/prebuild.py (build/prebuild.log)"; \
	wait $$prebuild || tail -n 40 build/prebuild.log; \
	trap - EXIT INT TERM; \
	grep '^prebuild:' build/prebuild.log; \
	$(PY) -m pytest -q -m slow --durations=0 \
		-n $(SLOW_WORKERS) --dist loadfile --no-loadscope-reorder

test-fast: setup
	$(PY) -m pytest -q -m 'not slow' --durations=15

lint: setup
	$(PY) -m pytest -q tests/test_linters.py

bench: setup
	$(PY) bench/run.py

iso: setup
	$(VENV)/bin/liferaft-build iso --profile $(PROFILE)

netboot: setup
	$(VENV)/bin/liferaft-build netboot --profile $(PROFILE)

# liferaft for a Debian 12 server: dist/liferaft_<version>_all.deb (README "Install on a server")
deb: setup
	$(VENV)/bin/liferaft-build deb --profile $(PROFILE)

clean:
	rm -rf dist build *.egg-info
