# procore_sync: `make demo` shows it working, `make test` runs every test.
# Both install what they need first (Debian 12: apt packages, cargo-pgrx).

PG_CONFIG    ?= /usr/lib/postgresql/15/bin/pg_config
# cargo pgrx test runs Postgres as this OS user (Postgres refuses to run as root).
PG_USER      ?= postgres
PGRX_TESTDIR ?= /tmp/procore_sync_pgrx_test
CARGO        ?= cargo

.PHONY: all prerequisites build install standin test test-unit test-pg test-regress test-e2e demo bench fmt lint clean

all: build

prerequisites:
	@.ci/install-prerequisites

build: prerequisites
	$(CARGO) build -p procore_sync

# Installs the extension into the system PostgreSQL 15 (needs write access to its lib and
# share directories, i.e. root).
install: prerequisites
	$(CARGO) pgrx install --pg-config $(PG_CONFIG)

standin:
	$(CARGO) build --release -p procore-standin

test: prerequisites test-unit test-pg test-regress test-e2e

# Pure Rust: the stand-in server and the end-to-end harness.
test-unit:
	$(CARGO) test -p procore-standin

# The extension's unit tests and #[pg_test]s, in a throwaway server run by cargo pgrx.
test-pg: prerequisites
	mkdir -p $(PGRX_TESTDIR) && chown $(PG_USER) $(PGRX_TESTDIR)
	$(CARGO) pgrx test pg15 --runas $(PG_USER) --pgdata $(PGRX_TESTDIR)/data

# The SQL surface against expected output (tests/pg_regress), in a temporary instance that
# pg_regress creates, without the preload.
PG_BINDIR    = $(shell $(PG_CONFIG) --bindir 2>/dev/null)
PG_REGRESS   = $(shell $(PG_CONFIG) --pkglibdir 2>/dev/null)/pgxs/src/test/regress/pg_regress
REGRESS_DIR ?= /tmp/procore_sync_regress
REGRESS      = $(basename $(notdir $(wildcard tests/pg_regress/sql/*.sql)))
test-regress: install
	rm -rf $(REGRESS_DIR) && mkdir -p $(REGRESS_DIR) && cp -r tests/pg_regress/sql tests/pg_regress/expected $(REGRESS_DIR)/
	chown -R $(PG_USER) $(REGRESS_DIR)
	cd $(REGRESS_DIR) && sudo -u $(PG_USER) $(PG_REGRESS) --temp-instance=$(REGRESS_DIR)/instance \
		--bindir=$(PG_BINDIR) --inputdir=. --outputdir=. $(REGRESS) \
		|| { cat $(REGRESS_DIR)/regression.diffs; exit 1; }

# Real clusters with the worker preloaded, the stand-in server, SQL from outside.
test-e2e: install standin
	$(CARGO) test -p procore_sync_e2e -- --test-threads=2

# Long fault loops (repeated kills and restarts under load); not part of `make test`.
.PHONY: test-soak
test-soak: install standin
	$(CARGO) test -p procore_sync_e2e -- --ignored

demo: install standin
	$(CARGO) run --release -p procore_sync_e2e --bin demo

# Benchmarks (never in CI, nothing asserts on time): W1 ingest vs its ceilings, W2 10,000
# users, W3 one huge resource, W4 idle. Builds the release extension and loads it in
# throwaway clusters through dynamic_library_path, so the installed extension (a debug build
# other tests use) is left alone; only its control file and SQL script are used, and
# `make install` runs only if they are missing. Writes target/bench/{results.csv,results.md,
# chart.png}. `make bench BENCH_ARGS='--only w2 --w2-users 2000'`; `bench --help` lists sizes.
BENCH_ARGS  ?=
BENCH_FONTS ?= fonts-dejavu-core
PG_SHAREDIR  = $(shell $(PG_CONFIG) --sharedir 2>/dev/null)

bench: prerequisites
	@test -f $(PG_SHAREDIR)/extension/procore_sync.control || $(MAKE) install
	@dpkg-query -W -f='$${Status}' $(BENCH_FONTS) 2>/dev/null | grep -q "install ok installed" || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(BENCH_FONTS) >/dev/null; }
	$(CARGO) build --release -p procore_sync
	$(CARGO) build --release -p procore-standin
	$(CARGO) run --release -p procore_sync_e2e --bin bench -- $(BENCH_ARGS)

.PHONY: bench-quick
bench-quick:
	$(MAKE) bench BENCH_ARGS="--quick $(BENCH_ARGS)"

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	$(CARGO) clean
	rm -rf $(PGRX_TESTDIR)
