# procore_sync: `make demo` shows it working, `make test` runs every test.
# Both install what they need first (Debian 12: apt packages, cargo-pgrx).

PG_CONFIG    ?= /usr/lib/postgresql/15/bin/pg_config
# cargo pgrx test runs Postgres as this OS user (Postgres refuses to run as root).
PG_USER      ?= postgres
PGRX_TESTDIR ?= /tmp/procore_sync_pgrx_test
CARGO        ?= cargo

.PHONY: all prerequisites build install standin test test-unit test-pg test-regress test-e2e test-upgrade release-0.1.0 demo bench fmt lint clean

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

test: prerequisites test-unit test-pg test-regress test-e2e test-package

# Pure Rust: the stand-in server and the end-to-end harness.
test-unit:
	$(CARGO) test -p procore_sync_core -p procore-standin

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

# Real clusters with the worker preloaded, the stand-in server, SQL from outside. The
# upgrade tests among them also need the released 0.1.0 (see release-0.1.0).
test-e2e: install standin release-0.1.0
	$(CARGO) test -p procore_sync_e2e -- --test-threads=2

# Only the upgrade and life-cycle tests, with their figures printed.
test-upgrade: install standin release-0.1.0
	$(CARGO) test -p procore_sync_e2e --test upgrade -- --test-threads=2 --nocapture

# The released 0.1.0 for the upgrade tests: its install script, kept in sql/ as its release
# commit generated it, goes beside the new version's files, and its library is built from
# that commit (once) into target/v0.1.0/lib, where the tests load it through
# dynamic_library_path. A target directory of its own: both libraries are named
# libprocore_sync.so, and one cargo target directory would swap them under each other.
V010_COMMIT  = 6c316f3
V010_DIR     = $(CURDIR)/target/v0.1.0
release-0.1.0: prerequisites
	install -m 644 sql/procore_sync--0.1.0.sql $(PG_SHAREDIR)/extension/
	@test -f $(V010_DIR)/lib/procore_sync.so || { \
		rm -rf $(V010_DIR)/src && mkdir -p $(V010_DIR)/src $(V010_DIR)/lib && \
		git archive $(V010_COMMIT) | tar -x -C $(V010_DIR)/src && \
		echo "building the 0.1.0 library from $(V010_COMMIT)" && \
		$(CARGO) build --manifest-path $(V010_DIR)/src/Cargo.toml -p procore_sync --lib --locked \
			--target-dir $(V010_DIR)/target && \
		cp $(V010_DIR)/target/debug/libprocore_sync.so $(V010_DIR)/lib/procore_sync.so; }

# The Debian package: target/package/postgresql-15-procore-sync_<version>_<arch>.deb, a
# release build by `cargo pgrx package` plus every upgrade script in sql/ (.ci/build-deb).
# It depends on Debian's postgresql-15 and the C runtime only.
.PHONY: package test-package
package: prerequisites
	@dpkg-query -W -f='$${Status}' dpkg-dev 2>/dev/null | grep -q "install ok installed" || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dpkg-dev >/dev/null; }
	PG_CONFIG=$(PG_CONFIG) .ci/build-deb

# Checks the package's metadata and files, installs it with dpkg -i, and on a fresh cluster
# runs CREATE EXTENSION and one sync against the stand-in (tests/e2e/tests/package.rs);
# then dpkg -r, and files of an earlier `make install` are put back (.ci/test-deb).
test-package: package standin
	.ci/test-deb

# docs/SCHEMA.md from a fresh CREATE EXTENSION in a throwaway cluster (the views, their
# columns and types, the shipped catalog); tests/e2e/tests/schema_doc.rs fails when it is stale.
.PHONY: schema-doc
schema-doc: install
	PROCORE_E2E_PG_BIN=$(PG_BINDIR) $(CARGO) run -p procore_sync_e2e --bin schema-doc

# Long fault loops (repeated kills and restarts under load); not part of `make test`.
.PHONY: test-soak
test-soak: install standin
	$(CARGO) test -p procore_sync_e2e --test faults -- --ignored

demo: install standin
	$(CARGO) run --release -p procore_sync_e2e --bin demo

# Benchmarks (never in CI, nothing asserts on time): W1 ingest vs its ceilings, W2 10,000
# users, W3 one huge resource and every slot busy, W4 idle, W5 one user with many
# projects per listings_per_user. Builds the release extension and loads it in
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
	$(MAKE) bench-visibility

# Per-user visibility: storage of grants and exceptions against the records, and the cost
# of the row-level-security predicate on a page of 100 rows (`bench_visibility --help`).
.PHONY: bench-visibility
VISIBILITY_ARGS ?=
bench-visibility: install
	$(CARGO) run --release -p procore_sync_e2e --bin bench_visibility -- $(VISIBILITY_ARGS)

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
