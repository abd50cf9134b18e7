# `make help` lists the targets. Every target builds .venv first when it is missing.
.DEFAULT_GOAL := help
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PYTHON ?= $(shell command -v python3.11 || command -v python3)
RUN ?= main
# Nothing is ever downloaded at run time: the embedded models and data are built locally.
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# OpenMP threads that spin while they wait turn a busy machine's tiny-model timings into noise (3-20x);
# waiting passively keeps them within ~1.5x. OMP_WAIT_POLICY=ACTIVE make … overrides.
export OMP_WAIT_POLICY ?= PASSIVE
# The embedded bases the notebooks train from (notebook 06 also tries proxy-small).
BASES := proxy target
NOTEBOOKS := $(notdir $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb)))

.PHONY: help venv lint package-check test reproduce readme regime warmup-curve toxic-check step-variants credibility bench bench-widths bench-sft lab clean-quick

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

# Bytecode is compiled on both cores after the install (33 s; pip compiles on one, ~55 s). It is needed even where
# PYTHONDONTWRITEBYTECODE=1 stops Python writing it on first use: without it every process spends ~15 s importing
# the stack instead of ~6. Like pip, a file that does not compile on this Python (torch's py312_intrinsics.py) is skipped.
$(VENV)/.installed: environment.yml pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	sed -n '/(no-deps)/!s/^ *- \([A-Za-z0-9_.-]*==[^ #]*\).*/\1/p' environment.yml > $(VENV)/requirements.txt
	sed -n '/(no-deps)/s/^ *- \([A-Za-z0-9_.-]*==[^ #]*\).*/\1/p' environment.yml > $(VENV)/requirements-no-deps.txt
	$(PY) -m pip install -q --no-compile -r $(VENV)/requirements.txt
	$(PY) -m pip install -q --no-compile --no-deps -r $(VENV)/requirements-no-deps.txt
	$(PY) -m compileall -q -j 0 $(VENV)/lib > /dev/null || true
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 > /dev/null
	touch $@

venv: $(VENV)/.installed ## build .venv from the pins in environment.yml (pip; no conda needed)

package-check: venv ## pip install . into a fresh venv against environment.yml's pins, then run the `ost` command (~1 min)
	rm -rf build/package-check && $(PYTHON) -m venv build/package-check
	cat $(VENV)/requirements.txt $(VENV)/requirements-no-deps.txt > build/package-check/pins.txt   # the venv's pins
	build/package-check/bin/pip install -q --no-compile -c build/package-check/pins.txt . 2>&1 | grep -v "^WARNING: Location" || true
	cd build && package-check/bin/ost --help | grep -q "prepare,warmup,score,select" && \
	  package-check/bin/python -c "import ost, torch, transformers; print('ost', ost.__version__ if hasattr(ost, '__version__') else '', 'installed alone: torch', torch.__version__, 'transformers', transformers.__version__)"
	rm -rf build

lint: venv ## ruff: pyflakes, pycodestyle at 120 columns, import order (pyproject.toml)
	$(VENV)/bin/ruff check .

test: venv lint package-check ## lint, the package installed alone, then the tests and every notebook executed at its quick defaults (nbval)
	$(PY) -m ost.models.base $(BASES)    # the notebooks' two bases, built side by side (once; ~3.5 min instead of ~6)
	$(PY) -m pytest -q tests notebooks --nbval-lax

reproduce: venv ## the main job: run every notebook with configs/$(RUN).yaml into results/$(RUN)/, then the README table
	mkdir -p results/$(RUN)
	$(if $(wildcard configs/$(RUN).yaml),$(PY) -m ost.runs check configs/$(RUN).yaml)
	start=$$(date +%s); logged=$$(cat data/runs/$(RUN)/sft_progress.jsonl 2>/dev/null | wc -l); \
	$(PY) -m ost.models.base $(BASES) proxy-small && \
	for nb in $(NOTEBOOKS); do \
	  $(PY) -m ost.runs execute $(if $(wildcard configs/$(RUN).yaml),-f configs/$(RUN).yaml) -p run $(RUN) \
	    notebooks/$$nb results/$(RUN)/$$nb || exit 1; \
	done; \
	printf '{"wall_seconds": %d, "commit": "%s", "finished": "%s", "sft_runs_logged_before": %d}\n' \
	  $$(( $$(date +%s) - start )) "$$(git rev-parse --short HEAD)" "$$(date -u +%FT%TZ)" $$logged \
	  > results/$(RUN)/reproduce.json
	$(if $(filter main,$(RUN)),$(MAKE) --no-print-directory readme)

readme: venv ## render README.md's table from results/main/summary.json, docs/results.md's from regime.json and credibility.json
	$(PY) -m ost.report.render --summary results/main/summary.json --readme README.md > /dev/null
	$(PY) -m ost.experiments.regime --out results/main/regime.json --readme docs/results.md
	$(PY) benchmarks/check_toxic.py --out results/bench/toxic_flags.json --render docs/toxic.md --readme README.md
	$(if $(wildcard results/main/credibility.json),$(PY) -m ost.experiments.credibility --config configs/main.yaml --readme docs/results.md)

regime: venv ## learning curves of the target: full pool and clean part, 3 lrs x 3 seeds, 8 epochs (~40 min) -> results/$(RUN)/regime.json
	$(PY) -m ost.experiments.regime --config configs/$(RUN).yaml --out results/$(RUN)/regime.json

warmup-curve: venv ## proxy competence vs warm-up length: val exact match, toxic AUROC of OST and the loss filter (~10 min) -> results/$(RUN)/warmup_curve.json
	$(PY) -m ost.experiments.warmup_curve --config configs/$(RUN).yaml --out results/$(RUN)/warmup_curve.json

toxic-check: venv ## toxic flags on three sets: share of each noise kind flagged at q = 5 %, realised false-flag rate, AUROC against the loss filter (~15 min) -> docs/toxic.md
	$(PY) benchmarks/check_toxic.py --out results/bench/toxic_flags.json
	$(PY) benchmarks/check_toxic.py --out results/bench/toxic_flags.json --render docs/toxic.md --readme README.md

step-variants: venv ## which one-step ranking finds the toxic samples: every step variant on the main pool and a second pool with 2 new noise kinds (~10 min) -> docs/step_choice.md
	OMP_NUM_THREADS=1 $(PY) benchmarks/step_variants.py --config configs/$(RUN).yaml --fraction 1.0 --epochs 12 \
	  --n-score 100000 --out results/$(RUN)/step_variants_competent.json & first=$$!; \
	OMP_NUM_THREADS=1 $(PY) benchmarks/step_variants.py --config configs/$(RUN).yaml --fraction 1.0 --epochs 12 \
	  --n-score 100000 --pool-seed 1 --extra-kinds --out results/$(RUN)/step_variants_competent_pool1.json; \
	second=$$?; wait $$first && test $$second = 0
	$(PY) benchmarks/step_variants.py --render docs/step_choice.md results/$(RUN)/step_variants_competent.json \
	  results/$(RUN)/step_variants_competent_pool1.json

credibility: venv ## after reproduce: can the table decide? seed CI, noise gap, a 2-thread base (~12 min), run time -> results/$(RUN)/credibility.json
	$(PY) -m ost.experiments.credibility --config configs/$(RUN).yaml --run $(RUN)

bench-widths: venv ## the default step against one training pass at 4 widths up to ~60 M parameters and 2 batch sizes: seconds and peak memory, ghost vs per-sample (~10 min) -> results/bench/widths.json, docs/widths.md
	$(PY) benchmarks/bench_widths.py --out results/bench/widths.json --render docs/widths.md

bench: venv bench-widths ## bench-widths, then scoring cost vs one epoch, exact, naive loop, memory in N -> results/bench/scoring.json (~25 min; BENCH_ARGS=--quick: ~14)
	$(PY) benchmarks/bench_utility.py $(BENCH_ARGS)

bench-sft: venv ## one target SFT run, the loop before and after its speed-ups, side by side: s/step, s/run, ratio, profile -> results/bench/sft.json (~13 min; BENCH_ARGS=--quick: ~3)
	$(PY) -m ost.models.base target
	OMP_NUM_THREADS=1 $(PY) benchmarks/bench_sft.py $(BENCH_ARGS)

lab: venv ## open the notebooks in JupyterLab
	$(VENV)/bin/jupyter lab notebooks

clean-quick: ## delete the quick-run outputs (results/quick/)
	rm -rf results/quick
