# ddl: the two commands of the README, and the pieces they are made of.
PYTHON ?= python3

.PHONY: run test setup build lint format sanitize tsan bench clean

## Set up (system packages + editable install) and run the main job: a 2-rank data-parallel
## training of a CNN on Fashion-MNIST.
run: setup
	$(PYTHON) -m ddl.run --nproc-per-node 2 examples/train_fashion_mnist.py

## Set up and run the test suite.
test: setup
	$(PYTHON) -m pytest -q

setup:
	PYTHON=$(PYTHON) scripts/setup.sh

## Rebuild the extension in place after editing csrc/.
build:
	$(PYTHON) setup.py -q build_ext --inplace

## The cheap gates: ruff, the clang-format check and the include-layer check.
lint:
	PYTHON=$(PYTHON) scripts/lint.sh

## Apply clang-format to csrc/ and tests/c/ in place (then the format gate passes).
format:
	PYTHON=$(PYTHON) scripts/lint.sh --fix format

## The test suite against an ASan + UBSan build (build/sanitize/).
sanitize:
	PYTHON=$(PYTHON) scripts/sanitize.sh

## The threaded tests (comm thread, watchdog, reducer, store) against a TSan build (build/tsan/).
tsan:
	PYTHON=$(PYTHON) scripts/tsan.sh

bench:
	$(PYTHON) benchmarks/bench_ops.py

clean:
	rm -rf build ddl/_C*.so *.egg-info
