# The two entry points: `make demo` runs the demo device (examples/phone.toml under
# cellvisord), `make test` runs every test. Both install what they need (Debian packages)
# first. Run as root.
CARGO ?= cargo
# The in-domain agent is a static executable, so it runs in any domain's root filesystem.
AGENT = target/static/release/cellvisor-agent

.PHONY: all deps build agent demo test lint unit e2e fuzz clean

all: build

deps:
	@scripts/deps.sh

agent:
	$(CARGO) rustc -p agent --features static --bin cellvisor-agent --release --target-dir target/static -- -C target-feature=+crt-static

build: agent
	$(CARGO) build --release
	cp $(AGENT) target/release/cellvisor-agent

demo: deps build
	scripts/demo.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy -p agent --features static --all-targets -- -D warnings

# Unit tests need no root; the end-to-end tests (crates/*/tests) run as root. Both demos run
# too (on the debug build), so they cannot rot.
test: deps lint agent
	# Every binary, the benchmark's cellvisor-app too (cargo test builds only those of
	# packages with integration tests).
	$(CARGO) build --workspace
	$(CARGO) test --workspace
	cp $(AGENT) target/debug/cellvisor-agent
	CELLVISOR=target/debug/cellvisor scripts/demo-oci.sh > target/demo-oci.log 2>&1 || { cat target/demo-oci.log; exit 1; }
	@tail -n 1 target/demo-oci.log
	CELLVISOR_BIN=target/debug scripts/demo.sh > target/demo.log 2>&1 || { cat target/demo.log; exit 1; }
	@tail -n 1 target/demo.log
	scripts/fuzz.sh 15
	scripts/api-fuzz.sh 20 18080 --exclude-checks positive_data_acceptance

# The fuzz targets, 15 s each (a campaign: scripts/fuzz.sh SECONDS), and schemathesis on the API.
fuzz:
	scripts/fuzz.sh 15
	scripts/api-fuzz.sh 20 18080 --exclude-checks positive_data_acceptance

clean:
	$(CARGO) clean
