# Two commands for a fresh clone (see README.md):
#   make book   set everything up, run the pipeline on the full data, build the book
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

.PHONY: setup book test lab clean-book

# The venv is rebuilt when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

setup: $(VENV)/.installed

# --all: every page is read and every notebook executed again, so the book never shows outputs
# left from an earlier build (Sphinx would otherwise skip pages whose source did not change).
book: setup
	CXR_PROFILE=full TQDM_DISABLE=1 $(VENV)/bin/jupyter-book build . --config book/_config.yml --toc book/_toc.yml \
	    --path-output book -W --keep-going --all
	@echo "The book is in book/_build/html/index.html"

test: setup
	CXR_PROFILE=smoke $(VENV)/bin/pytest

lab: setup
	$(VENV)/bin/jupyter lab notebooks/

clean-book:
	rm -rf book/_build
