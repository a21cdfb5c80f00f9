# pgbaas: the two commands are `make run` and `make test` (see README.md).
.PHONY: run test deps build bench

deps:
	bash tests/scripts/install-deps.sh

build: deps
	bash tests/scripts/build.sh

# Embedded Postgres under $PGBAAS_DATA_DIR (.pgbaas), proxy on $PGBAAS_HTTP_PORT (8080).
run: build
	exec target/release/pgbaas-dev run

test:
	bash tests/scripts/test-all.sh

# The side-by-side benchmark (docs/benchmarks.md): pgbaas vs pgbench vs Parse Server and PocketBase.
# Never part of `make test`, which only runs its --quick smoke mode.
bench: build
	bash tests/scripts/bench-deps.sh
	target/release/pgbaas-bench
