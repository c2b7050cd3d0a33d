# faxd: `make run` starts a node with the embedded defaults; `make test` runs every check.
# Thin wrappers: the logic lives in rel/deps.sh and tests/couchdb/with-server.sh.

CARGO ?= cargo
CONFIG ?= rel/dev.toml

# CI builds once from a clean clone: incremental caches would only double the disk the
# build takes (and a full disk fails the run).
ifdef CI
export CARGO_INCREMENTAL := 0
endif

.PHONY: run test build deps test-deps fmt lint bench bench-api clean

run: deps
	$(CARGO) build --release -p faxd-supervisors
	./target/release/faxd serve --config $(CONFIG)

test: test-deps
	rel/check-programs.sh
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	tests/couchdb/with-server.sh $(CARGO) test --workspace --no-fail-fast

build: deps
	$(CARGO) build --workspace

deps:
	rel/deps.sh

test-deps:
	rel/deps.sh test

fmt:
	$(CARGO) fmt --all

bench:
	rel/deps.sh bench
	$(CARGO) build --release -p faxd-supervisors
	$(CARGO) build --release -p faxd --example t30_bench --example ccitt_bench --example esl_bench \
		--example smtp_bench --example notify_bench
	tests/couchdb/with-server.sh rel/bench.sh
	@echo "== cluster: 600 jobs due at once, jobs/s with 1, 2 and 3 nodes (CouchDB-API test server, null engine)"
	bash -o pipefail -c '$(CARGO) test --release -p faxd-supervisors --test cluster_spread -- \
		--ignored --nocapture bench_jobs_per_second_with_one_two_and_three_nodes 2>&1 \
		| grep -E "node\(s\):|test result"'

bench-api:
	rel/deps.sh bench
	$(CARGO) build --release -p faxd-supervisors
	$(CARGO) build --release -p faxd --example seed_faxes
	rel/bench-api.sh
	BENCH_STORE=couchdb BENCH_ACCOUNTS=10 BENCH_FAXES=10000 tests/couchdb/with-server.sh rel/bench-api.sh

clean:
	$(CARGO) clean
