# procore_sync: `make demo` shows it working, `make test` runs every test.
# Both install what they need first (Debian 12: apt packages, cargo-pgrx).

PG_CONFIG    ?= /usr/lib/postgresql/15/bin/pg_config
# cargo pgrx test runs Postgres as this OS user (Postgres refuses to run as root).
PG_USER      ?= postgres
PGRX_TESTDIR ?= /tmp/procore_sync_pgrx_test
CARGO        ?= cargo

.PHONY: all prerequisites build install standin test test-unit test-pg test-e2e demo bench fmt lint clean

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

test: prerequisites test-unit test-pg test-e2e

# Pure Rust: the stand-in server and the end-to-end harness.
test-unit:
	$(CARGO) test -p procore-standin

# The extension's unit tests and #[pg_test]s, in a throwaway server run by cargo pgrx.
test-pg: prerequisites
	mkdir -p $(PGRX_TESTDIR) && chown $(PG_USER) $(PGRX_TESTDIR)
	$(CARGO) pgrx test pg15 --runas $(PG_USER) --pgdata $(PGRX_TESTDIR)/data

# Real clusters with the worker preloaded, the stand-in server, SQL from outside.
test-e2e: install standin
	$(CARGO) test -p procore_sync_e2e -- --test-threads=2

demo: install standin
	$(CARGO) run --release -p procore_sync_e2e --bin demo

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	$(CARGO) clean
	rm -rf $(PGRX_TESTDIR)
