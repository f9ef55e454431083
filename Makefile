# Two commands do all set-up on a fresh machine:  make demo   and   make test
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SHARED ?= ../shared
SAMPLE := data/sample
# the sample city: ministry-export look-alikes, clerk-typed workbooks (abbreviations, the forms'
# labels, a few typos) and rare row errors; scripts/demo_faults.py then adds a partially loaded,
# a rejected and an unreadable file and spreads the arrival times over the collection window
SAMPLE_MIX := --export-share 0.3 --clerk-share 0.3 --typo-rate 0.3 --error-rate 0.002
DEMO_CONFIG := config/demo.yaml
YEAR   ?= 2022-2023

# Quiet, offline, reproducible Prefect and GX (stack-findings §3, §4)
export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 90
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1
export GX_ANALYTICS_ENABLED ?= False
export PREFECT_LOGGING_LEVEL ?= WARNING

.PHONY: help venv sysdeps demo test ui bench sample templates codelists expectations golden pdf-check screenshots clean

help:
	@echo "make demo   - set up, generate the sample city and templates, run the pipeline on it"
	@echo "make test   - set up and run the test suite"
	@echo "make bench  - read floor vs obvious implementation vs edustat cold/warm/one changed, city (100) and province (730) → build/bench/results.json"
	@echo "make ui     - start the Prefect server + dashboard on http://127.0.0.1:4200 and serve the flows"
	@echo "make codelists - re-extract code lists from $(SHARED)/reference/moet"
	@echo "make golden - rewrite the report forms' golden files (tests/golden/) from the sample city"
	@echo "make pdf-check - convert a template to PDF with LibreOffice (installs it via apt if absent)"
	@echo "make sysdeps - install LibreOffice, poppler-utils and fonts (for the render tests) when absent"
	@echo "make screenshots - Prefect UI of a small collection in headless Chromium → build/screenshots/*.png, checked"

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "Python 3.11 is required ($(PYTHON) not found)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip==26.0.1"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	@touch $(STAMP)

venv: $(STAMP)

sample: $(STAMP)
	$(VENV)/bin/edustat synth --schools 10 --seed 2022 --year $(YEAR) --period dau_nam $(SAMPLE_MIX) -o $(SAMPLE)/$(YEAR)/dau_nam
	$(VENV)/bin/edustat synth --schools 10 --seed 2022 --year $(YEAR) --period cuoi_nam $(SAMPLE_MIX) -o $(SAMPLE)/$(YEAR)/cuoi_nam

templates: $(STAMP)
	@for lv in MN TH THCS; do for p in dau_nam cuoi_nam; do \
	  $(VENV)/bin/edustat template --level $$lv --year $(YEAR) --period $$p -o data/curated/templates/$(YEAR)/mau_$${lv}_$$p.xlsx || exit 1; done; done

demo: sample templates
	$(PY) scripts/demo_faults.py $(SAMPLE)/$(YEAR)/dau_nam
	$(VENV)/bin/edustat run --year $(YEAR) --period dau_nam --inbox $(SAMPLE)/$(YEAR)/dau_nam --config $(DEMO_CONFIG)
	$(VENV)/bin/edustat run --year $(YEAR) --period cuoi_nam --inbox $(SAMPLE)/$(YEAR)/cuoi_nam --config $(DEMO_CONFIG)
	$(VENV)/bin/edustat report --year $(YEAR) --period dau_nam --form reports/hoc-sinh-khuyet-tat.yaml --form reports/giao-vien-mon-trinh-do.yaml --form reports/lop-theo-khoi.sql --config $(DEMO_CONFIG)
	$(VENV)/bin/edustat template --from-year $(YEAR) --school all --config $(DEMO_CONFIG)
	$(VENV)/bin/edustat status --year $(YEAR) --period dau_nam
	@echo "Sample city: $(SAMPLE)/$(YEAR)/  templates: data/curated/templates/$(YEAR)/  feedback: data/curated/feedback/$(YEAR)/  ad-hoc reports (reports/*.yaml, *.sql): data/curated/reports/$(YEAR)/dau_nam/  next year's prefilled workbooks: data/curated/templates/<next year>/"

# The render tests print every form through LibreOffice and measure the PDF with pdftotext.
# Carlito and Liberation: metric twins of Calibri and Times New Roman, so LibreOffice lays the
# workbooks out as Excel does (column widths, page breaks)
# Chromium: the Prefect UI screenshots (make screenshots, tests/test_ui.py)
SYSDEPS := libreoffice-calc-nogui poppler-utils fonts-dejavu-core fonts-crosextra-carlito fonts-liberation chromium
sysdeps:
	@if command -v soffice >/dev/null 2>&1 && command -v pdftotext >/dev/null 2>&1 \
	    && fc-list 2>/dev/null | grep -qi carlito && command -v chromium >/dev/null 2>&1; then :; else \
	  echo "Installing $(SYSDEPS) (LibreOffice, pdftotext and Chromium for the render and UI tests)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $(SYSDEPS); \
	fi

# both cores: a test file per worker (module fixtures stay in one process), handed out in
# collection order, which tests/conftest.py sorts longest file first
# PYTHONDONTWRITEBYTECODE emptied: a shell that sets it (this machine's does) made every test
# process and every `edustat` subprocess compile edustat's own ~20,000 lines (and the tests)
# again, ~0.5 CPU s each (docs/SCALE.md §6, round 16); __pycache__ is ignored by git and
# by the cache's code digest (edustat.incremental)
test: $(STAMP) sysdeps
	PYTHONDONTWRITEBYTECODE= $(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

codelists: $(STAMP)
	$(VENV)/bin/edustat codelists --source $(SHARED)/reference/moet/mo-ta-du-lieu-dau-nam_2020_sync-spec.xlsx

# one table per size: read floor, the obvious implementation (city), edustat cold / warm / one
# school changed, each in its own process; BENCH_ARGS="--scenarios floor,cold,dask" etc.
bench: $(STAMP)
	$(PY) scripts/bench.py --only city $(BENCH_ARGS)
	$(PY) scripts/bench.py --only province --no-prefect-startup $(BENCH_ARGS)

ui: $(STAMP)
	$(VENV)/bin/edustat server --port 4200

golden: $(STAMP)
	$(PY) -m edustat.golden

expectations: $(STAMP)
	$(VENV)/bin/edustat expectations

screenshots: $(STAMP)
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core)
	$(PY) scripts/screenshots.py --out build/screenshots

pdf-check: templates sysdeps
	soffice --headless --convert-to pdf --outdir build/pdf data/curated/templates/$(YEAR)/mau_TH_dau_nam.xlsx

clean:
	rm -rf $(VENV) .prefect build
