# The two entry points: `make demo` runs the demo domain, `make test` runs every test.
# Both install what they need (Debian packages) first. Run as root.
CARGO ?= cargo

.PHONY: all deps build demo test lint unit e2e clean

all: build

deps:
	@scripts/deps.sh

build:
	$(CARGO) build --release

demo: deps build
	scripts/demo.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

# Unit tests need no root; the end-to-end tests (crates/*/tests) run as root. The demo runs
# too (on the debug build), so it cannot rot.
test: deps lint
	$(CARGO) test --workspace
	CELLVISOR=target/debug/cellvisor scripts/demo.sh > target/demo.log 2>&1 || { cat target/demo.log; exit 1; }
	@tail -n 1 target/demo.log

clean:
	$(CARGO) clean
