# Two entry points: `make demo` and `make test`. Both install what is missing, then build.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all deps build demo test bench fuzz format clean fresh-check

all: build

$(BUILD)/.deps-ok: scripts/install-deps.sh scripts/oracles-requirements.txt scripts/llamacpp-venv.sh \
                   scripts/llamacpp-requirements.txt scripts/serve-requirements.txt
	bash scripts/install-deps.sh
	@mkdir -p $(BUILD) && touch $@

deps: $(BUILD)/.deps-ok

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

demo: build
	bash scripts/demo.sh $(BUILD)/lamina

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

bench: build
	bash bench/run.sh $(BUILD)

fuzz: deps
	bash fuzz/run.sh 30

# Maintainers: make test + make demo inside a fresh Debian 12 root (debootstrap), see README.md.
fresh-check:
	bash scripts/fresh-check.sh

format:
	clang-format -i $$(git ls-files '*.cpp' '*.h')

clean:
	rm -rf $(BUILD)
