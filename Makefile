# Commands for a fresh clone (see README.md):
#   make book        set everything up, build the book from the shipped model on the full data
#   make reproduce   retrain the shipped model here, build the book from it, compare it with the shipped one
#   make test   set everything up, run the tests (smoke profile), build and browse-test the book
# Both create .venv when it is missing.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
ARCH := $(shell uname -m)
ifeq ($(ARCH),aarch64)
TORCH := torch==2.9.1 torchvision==0.24.1
else
TORCH := torch==2.14.1 torchvision==0.29.1
endif

.PHONY: setup data-check comparisons book reproduce test lab clean-book publish pdf

# The venv is rebuilt when pyproject.toml or constraints.txt (the exact versions) changes.
$(VENV)/.installed: pyproject.toml constraints.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	# which backend runs the model here; makes the shipped model's ONNX file in the cache once
	$(VENV)/bin/cxr backends
	touch $@

setup: $(VENV)/.installed

# The data first: without it, stop at once with the one message that says where it was looked
# for and how to get it (cxr data where), before any chapter or test runs.
data-check: setup
	@$(VENV)/bin/cxr data where >/dev/null

# The comparison runs the chapters show beside the final model (chapter 03: the linear head and
# the ResNet50 baseline; chapter 05: the "before" model), and the record the book reads of them
# (reports/comparisons.json, `cxr compare`), and chapter 02's enhancement experiment
# (reports/enhancement.json, `cxr enhancement`). Each run is reused when an identical run (same recipe,
# config and data) has finished; no notebook trains, and a book build needs only the record.
PROFILE ?= full
CXR := CXR_PROFILE=$(PROFILE) TQDM_DISABLE=1 $(VENV)/bin/cxr
comparisons: setup data-check
	$(CXR) train --no-harmonise >/dev/null
	$(CXR) train --approach linear >/dev/null
	$(CXR) train --approach resnet50 >/dev/null
	$(CXR) compare >/dev/null
	$(CXR) enhancement >/dev/null

# The book, built from the shipped model (cxr/weights/) and the data.
# --all: every page is read and every notebook executed again, so the book never shows outputs
# left from an earlier build (Sphinx would otherwise skip pages whose source did not change).
BUILD = CXR_PROFILE=$(PROFILE) TQDM_DISABLE=1 $(VENV)/bin/jupyter-book build . --config book/_config.yml \
	--toc book/_toc.yml --path-output book -W --keep-going --all
book: setup data-check
	$(BUILD)
	@echo "The book is in book/_build/html/index.html"

# Retrain the shipped model's two members on this machine (the whole-film final run and the lung
# crop), build the book from the retrained model, and judge whether it reproduces the shipped one
# (`cxr reproduced`, which keeps how long this took). The book sees the retrained model as
# `cxr export --whole-and-lungs` would ship it (one file, half precision): when that is the
# shipped model bit for bit, every committed record describes it and the comparison runs are not
# needed; otherwise they are made first (`make comparisons`: the ResNet50 baseline alone takes
# longer than retraining). Another profile (smoke) has no committed comparison record, so its runs
# are made first. Last, the retrained runs' training histories (`cxr training-log`): chapter 03 shows
# them for the shipped file, which carries none.
reproduce: setup data-check $(if $(filter full,$(PROFILE)),,comparisons)
	start=$$(date +%s) && $(CXR) train >/dev/null && $(CXR) train --lungs crop >/dev/null \
	&& { $(CXR) reproduced --bitwise || $(MAKE) --no-print-directory comparisons PROFILE=$(PROFILE); } \
	&& CXR_MODEL=retrained $(BUILD) && $(CXR) reproduced --since $$start && $(CXR) training-log

test: setup data-check
	$(MAKE) --no-print-directory comparisons PROFILE=smoke
	CXR_PROFILE=smoke $(VENV)/bin/pytest

# Publish the built book (make book first) to the gh-pages branch of REMOTE, the Jupyter Book 1
# way (ghp-import); GitHub Pages serves that branch. REMOTE: a remote's name or a repository's path or URL.
SITE ?= book/_build/html
REMOTE ?= origin
publish:
	@test -x $(VENV)/bin/ghp-import || { echo "ghp-import is missing: run make setup"; exit 1; }
	@test -f $(SITE)/index.html || { echo "no built book in $(SITE): run make book first"; exit 1; }
	$(VENV)/bin/ghp-import --no-jekyll --push --force --remote $(REMOTE) --branch gh-pages \
		--message "Publish the book built from $$(git rev-parse --short HEAD 2>/dev/null || echo 'an unknown commit')" $(SITE)

# The report as one PDF, for readers who circulate documents: every page of the built book (make
# book first), in the table of contents' order, printed by Debian's chromium and joined by
# poppler's pdfunite (apt-get install chromium poppler-utils); nothing is downloaded.
PDF ?= book/_build/cxr-report.pdf
pdf:
	$(PY) book/pdf.py $(SITE) $(PDF)

lab: setup
	$(VENV)/bin/jupyter lab notebooks/

clean-book:
	rm -rf book/_build
