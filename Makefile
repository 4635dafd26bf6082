# Two entry points on a fresh machine: `make demo` and `make test`. Both install what is missing.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# salmon is the second quantifier (quant.tool: salmon); installed like kallisto, the tests need it
SYSTEM_TOOLS := kallisto salmon fasterq-dump

.PHONY: demo test browser lint typecheck deps system-tools venv bench clean-demo amalgkit-venv

deps: system-tools venv

system-tools:
	@missing=""; for t in $(SYSTEM_TOOLS); do command -v $$t >/dev/null || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
	  echo "Missing:$$missing — installing Debian packages kallisto salmon sra-toolkit"; \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kallisto salmon sra-toolkit >/dev/null; \
	  elif command -v sudo >/dev/null && command -v apt-get >/dev/null && sudo -n true 2>/dev/null; then \
	    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kallisto salmon sra-toolkit >/dev/null; \
	  else \
	    echo "Cannot install them here. Install kallisto, salmon and sra-tools yourself, e.g.:"; \
	    echo "  sudo apt-get install kallisto salmon sra-toolkit        (Debian/Ubuntu)"; \
	    echo "  conda install -c bioconda kallisto salmon sra-tools     (bioconda, any Linux/macOS)"; \
	    exit 1; \
	  fi; \
	fi; \
	for t in $(SYSTEM_TOOLS); do command -v $$t >/dev/null || { echo "$$t still missing after install"; exit 1; }; done

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip >/dev/null
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

demo: deps
	$(PY) scripts/demo.py

# a browser for the report's test: Debian's chromium, installed when missing and possible
browser:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "Missing: chromium — installing the Debian package"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium is missing: install it (apt-get install chromium) for the report's browser test"; fi; }

# lint and format check (ruff), type check (mypy on pipeline/), then the whole suite
test: deps browser lint typecheck
	$(PY) -m pytest -q

# amalgkit (a client of our outputs, tested for real) in a venv of its own, cached by the tarball's hash
amalgkit-venv:
	scripts/amalgkit_venv.sh >/dev/null

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv
	$(VENV)/bin/mypy

bench: deps
	$(PY) bench/download_bench.py
	$(PY) bench/segments_bench.py
	$(PY) bench/pipeline_bench.py
	$(PY) bench/stream_bench.py
	$(PY) bench/scale_bench.py

clean-demo:
	rm -rf output/demo
