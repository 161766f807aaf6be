# FraiseQL — `make help` lists the targets.
SHELL := /bin/bash
CARGO ?= cargo
HOST_TARGET := x86_64-unknown-linux-gnu
MUSL_TARGET := x86_64-unknown-linux-musl
# The static build: musl when that target is installed, else glibc with crt-static.
STATIC_TARGET := $(shell rustup target list --installed 2>/dev/null | grep -qx $(MUSL_TARGET) && echo $(MUSL_TARGET) || echo $(HOST_TARGET))
STATIC_ENV := CARGO_TARGET_$(shell echo $(STATIC_TARGET) | tr 'a-z-' 'A-Z_')_RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static"
# Where cargo puts its output, asked of cargo itself: a CARGO_TARGET_DIR set globally (or in
# a cargo config) moves it away from ./target.
TARGET_DIR := $(shell $(CARGO) metadata --format-version 1 --no-deps 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])' 2>/dev/null || echo target)
BIN := $(TARGET_DIR)/release/fraiseql
# The Python packages the tests drive (SMTP receiver, Flight client) live in a project-local
# venv, so `make test` needs only a python3 on PATH, whatever is installed in it.
VENV := .venv
VENV_STAMP := $(VENV)/.installed
# cargo-fuzz (libFuzzer) for `make fuzz`, installed once under the target directory like
# nextest. It needs nightly flags: RUSTC_BOOTSTRAP=1 lets the stable compiler accept them.
CARGO_FUZZ := $(shell command -v cargo-fuzz >/dev/null 2>&1 && echo cargo-fuzz || echo "$(TARGET_DIR)/tools/bin/cargo-fuzz")
FUZZ_SECONDS ?= 60
# none: libFuzzer's coverage guidance without a sanitizer (safe Rust: panics, aborts,
# overflows, OOM and timeouts are what it finds); address works too, at a full rebuild.
FUZZ_SANITIZER ?= none
FUZZ_TARGETS := graphql_request where_filter observer_condition flight_ticket flight_put jwt
FUZZ := RUSTC_BOOTSTRAP=1 $(CARGO_FUZZ) fuzz
# cargo-nextest runs each test in its own process; without one on PATH, make test installs
# it once under the target directory.
NEXTEST := $(shell command -v cargo-nextest >/dev/null 2>&1 && echo "$(CARGO) nextest" || echo "$(TARGET_DIR)/tools/bin/cargo-nextest nextest")
DEMO_DB ?= fraiseql_demo
DEMO_URL ?= postgres://postgres@127.0.0.1:5432/$(DEMO_DB)

.PHONY: help build run test test-deps services static dist lint bench demo fuzz

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'

build: ## build the release binary ($(TARGET_DIR)/release/fraiseql)
	$(CARGO) build --release

run: build ## create the demo database (blog example) if missing, run db init, serve it on 127.0.0.1:8080
	@psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$(DEMO_DB)'" postgres | grep -q 1 \
	  || createdb -h 127.0.0.1 -U postgres $(DEMO_DB)
	FRAISEQL_DATABASE_URL=$(DEMO_URL) $(BIN) db init
	@psql -h 127.0.0.1 -U postgres -tAc "SELECT to_regclass('public.tb_user') IS NOT NULL" $(DEMO_DB) | grep -q t \
	  || psql -q -h 127.0.0.1 -U postgres -v ON_ERROR_STOP=1 -f examples/blog/schema.sql -f examples/blog/seed.sql $(DEMO_DB) >/dev/null
	FRAISEQL_DATABASE_URL=$(DEMO_URL) $(BIN) serve --schema examples/blog/schema.json

static: ## build dist/fraiseql, statically linked (no dynamic section)
	$(STATIC_ENV) $(CARGO) build --release --target $(STATIC_TARGET)
	@mkdir -p dist
	cp $(TARGET_DIR)/$(STATIC_TARGET)/release/fraiseql dist/fraiseql
	@if readelf -d dist/fraiseql | grep -q 'Dynamic section'; then echo "dist/fraiseql is not static" >&2; exit 1; fi
	@echo "dist/fraiseql: static, $$(du -m dist/fraiseql | cut -f1) MB"

VERSION = $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)

dist: static ## release files in dist/: static binary and source tarballs, SHA256SUMS, the Homebrew formula
	tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C dist -cf - fraiseql \
	  | gzip -n > dist/fraiseql-$(VERSION)-$(STATIC_TARGET).tar.gz
	git archive --format=tar --prefix=fraiseql-$(VERSION)/ HEAD | gzip -n > dist/fraiseql-$(VERSION).tar.gz
	cd dist && sha256sum fraiseql-$(VERSION)-$(STATIC_TARGET).tar.gz fraiseql-$(VERSION).tar.gz > SHA256SUMS
	sed -e 's/@VERSION@/$(VERSION)/g' \
	  -e "s/@SHA256@/$$(sha256sum dist/fraiseql-$(VERSION).tar.gz | cut -d' ' -f1)/" \
	  packaging/homebrew/fraiseql.rb.in > dist/fraiseql.rb
	@cat dist/SHA256SUMS

test: services static test-deps ## run every test (unit + integration) against the local services
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(STATIC_ENV) $(NEXTEST) run --release --target $(STATIC_TARGET) --no-fail-fast

test-deps: $(VENV_STAMP) $(TARGET_DIR)/tools/.nextest ## what the tests need beyond Rust and the services: the Python venv, cargo-nextest

services: ## install what the tests need from the machine when missing, start the local services that are down (scripts/test-services)
	scripts/test-services

$(VENV_STAMP): requirements-test.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --disable-pip-version-check -r requirements-test.txt
	touch $@

$(TARGET_DIR)/tools/.nextest:
	@command -v cargo-nextest >/dev/null 2>&1 \
	  || $(CARGO) install --locked --root $(TARGET_DIR)/tools cargo-nextest
	@mkdir -p $(@D) && touch $@

lint: ## cargo fmt --check and clippy with warnings denied
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

bench: build ## benchmarks: GraphQL vs PostGraphile (v4 blog, v5 shop); the write cost of generate-views' triggers; the cost of JWT auth; a rate-limited flood; Redis queue vs BullMQ; Flight vs ADBC and GraphQL JSON; observers commit→delivery; start-up and memory
	python3 -m pip install -q -r bench/requirements.txt
	python3 bench/graphql_bench.py --binary $(BIN)
	python3 bench/shop_bench.py --binary $(BIN)
	python3 bench/genviews_write_cost.py --binary $(BIN)
	python3 bench/auth_bench.py --binary $(BIN)
	python3 bench/ratelimit_flood.py --binary $(BIN)
	bench/queue_bench.sh
	BINARY=$(BIN) bench/flight/run.sh
	$(CARGO) bench --bench observers
	bench/startup.sh $(BIN)

fuzz: $(TARGET_DIR)/tools/.cargo-fuzz ## fuzz each target in fuzz/ for FUZZ_SECONDS (default 60), print executions; crashes in fuzz/artifacts/
	$(FUZZ) build -s $(FUZZ_SANITIZER) --target-dir $(TARGET_DIR)/fuzz
	@mkdir -p fuzz/logs; rm -f fuzz/logs/summary.txt; failed=""; total=0; \
	for t in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/corpus/$$t; \
	  echo "== $$t ($(FUZZ_SECONDS) s)"; \
	  $(FUZZ) run -s $(FUZZ_SANITIZER) --target-dir $(TARGET_DIR)/fuzz $$t fuzz/corpus/$$t fuzz/seeds/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
	    > fuzz/logs/$$t.log 2>&1 || failed="$$failed $$t"; \
	  n=$$(sed -n 's/^stat::number_of_executed_units: *//p' fuzz/logs/$$t.log | tail -1); \
	  total=$$((total + $${n:-0})); \
	  printf '%-20s %12s executions\n' $$t "$${n:-?}" | tee -a fuzz/logs/summary.txt; \
	done; \
	printf '%-20s %12s executions\n' total $$total | tee -a fuzz/logs/summary.txt; \
	if [ -n "$$failed" ]; then echo "crashed:$$failed (see fuzz/logs/, fuzz/artifacts/)" >&2; exit 1; fi

$(TARGET_DIR)/tools/.cargo-fuzz:
	@command -v cargo-fuzz >/dev/null 2>&1 \
	  || $(CARGO) install --locked --root $(TARGET_DIR)/tools cargo-fuzz
	@mkdir -p $(@D) && touch $@

demo: run ## alias of run
