# Every user-facing command; the README explains each one.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LOAD_VENV := .venv-load

.PHONY: install install-dev install-load install-cluster run lint test test-all test-image test-cluster test-cluster-slow image cluster cluster-down cluster-status cluster-diagram cluster-bench cluster-sweep stop-db load load-500 load-smoke capacity sweep bench pgtune clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt | $(BIN)/activate
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements-dev.txt requirements.txt | $(BIN)/activate
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

## run: the service on PORT (default 8000): migrations, 20 users if the table is empty, gunicorn
run: install
	$(BIN)/python -m scripts.migrate
	$(BIN)/python -m scripts.seed_users 20 --if-empty
	exec $(BIN)/python -m scripts.serve

## lint: ruff (lint and format) and mypy on the app modules
lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## test: lint, then the default test suite (embedded PostgreSQL, plus TEST_DATABASE_URL when set); the load report's test runs bzt
test: lint install-load
	$(BIN)/python -m pytest

## test-cluster: the topology's CI smoke (root; installs the engines first)
test-cluster: install-dev install-cluster
	$(BIN)/python -m pytest -m "cluster and not slow" tests/topology

## test-cluster-slow: the topology's long tests (slow clients in numbers, rolling restart)
test-cluster-slow: install-dev install-cluster
	$(BIN)/python -m pytest -m "cluster and slow" tests/topology -s

## test-all: also the long, marked tests (soak, sweeps)
test-all: lint install-load
	$(BIN)/python -m pytest -m "slow or not slow"

$(LOAD_VENV)/.installed: requirements-load.txt
	$(PYTHON) -m venv $(LOAD_VENV)
	$(LOAD_VENV)/bin/pip install --quiet -r requirements-load.txt
	touch $@

## install-load: Taurus and locust in their own virtualenv (bzt pins urllib3 and setuptools exactly)
install-load: $(LOAD_VENV)/.installed

## load: the 100-user Taurus ramp against a service this command starts and stops (WORKERS=N to choose; CLUSTER=1: through the front of the topology)
load: install-dev install-load $(if $(CLUSTER),install-cluster)
	$(BIN)/python -m load.run $(if $(WORKERS),--workers $(WORKERS)) $(if $(CLUSTER),--cluster)

## load-500: the same with 500 users
load-500: install-dev install-load $(if $(CLUSTER),install-cluster)
	$(BIN)/python -m load.run bzt-500.yml $(if $(WORKERS),--workers $(WORKERS)) $(if $(CLUSTER),--cluster)

## load-smoke: 5 users for about 20 s (what CI runs)
load-smoke: install-dev install-load
	$(BIN)/python -m load.run load/bzt-smoke.yml --seed-users 1000 --check-report

## capacity: open-model series of offered rates; the highest within the p99 budget (WORKERS=N to choose)
capacity: install-dev install-load
	$(BIN)/python -m load.capacity $(if $(WORKERS),--workers $(WORKERS))

## sweep: workers x users grid with wrk; table and charts in reports/sweep
sweep: install-dev
	$(BIN)/python -m load.sweep

## bench: GET /users/{id} and list pages against the two ceilings; reports/bench
bench: install-dev
	$(BIN)/python -m load.bench

## image: the container image with podman (IMAGE, BASE_IMAGE); the Debian base is made once with debootstrap
image: install
	container/build-image.sh

## test-image: build the image, then start it on a PostgreSQL the test owns and drive the API through it
test-image: image install-dev
	$(BIN)/python -m pytest -m image tests/test_image.py

# The topology's engines: Debian's packages (as root, once) and Patroni in its own virtualenv.
CLUSTER_PACKAGES := nginx haproxy pgbouncer etcd-server etcd-client python3-venv
PATRONI_VENV := .venv-patroni

/usr/sbin/haproxy /usr/sbin/pgbouncer /usr/bin/etcd:
	@# Debian's packages start their own services on install; the topology runs its own copies in
	@# namespaces, so a policy-rc.d that says "exit 101" holds them back during the install (unless
	@# the machine already has one, which is then left as it is).
	apt-get update -qq
	if [ -e /usr/sbin/policy-rc.d ]; then ours=; else ours=1; printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; fi; \
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 $(CLUSTER_PACKAGES) >/dev/null; status=$$?; \
	if [ -n "$$ours" ]; then rm -f /usr/sbin/policy-rc.d; fi; exit $$status

$(PATRONI_VENV)/.installed: requirements-cluster.txt | /usr/sbin/haproxy /usr/sbin/pgbouncer /usr/bin/etcd
	/usr/bin/python3 -m venv $(PATRONI_VENV)
	$(PATRONI_VENV)/bin/pip install --quiet -r requirements-cluster.txt
	touch $@

## install-cluster: HAProxy, nginx, PgBouncer, etcd (Debian) and Patroni (PyPI, .venv-patroni)
install-cluster: install $(PATRONI_VENV)/.installed

## cluster: the whole topology in network namespaces (root); prints the front's URL last
cluster: install-cluster
	$(BIN)/python -m cluster up

## cluster-down: stop and remove everything `make cluster` made
cluster-down:
	$(BIN)/python -m cluster down

## cluster-diagram: redraw docs/topology.svg and .png (Graphviz)
cluster-diagram: install
	command -v dot >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz >/dev/null; }
	$(BIN)/python -m cluster.diagram

## cluster-bench: pooling options and HAProxy vs nginx, measured in one run (a few minutes)
cluster-bench: install-dev install-cluster
	$(BIN)/python -m cluster.bench

## cluster-sweep: app hosts x workers x connections through the front; table and chart in reports/cluster-sweep
cluster-sweep: install-dev install-cluster
	$(BIN)/python -m cluster.sweep

## cluster-status: app hosts up at the front, database roles
cluster-status:
	$(BIN)/python -m cluster status

stop-db: install
	$(BIN)/python -m scripts.embedded_db stop

pgtune: install
	$(BIN)/python -m scripts.pgtune

clean:
	rm -rf $(VENV) $(LOAD_VENV) $(PATRONI_VENV) load/results reports/tmp
