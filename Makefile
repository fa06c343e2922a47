# The README's two commands: `make reproduce` (the study) and `make test`.
# Both set up what they need first: a .venv with the pinned dependencies
# (pyproject.toml) and the Fashion-MNIST files.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
OUT ?= report
PRESET ?= homework
FASHION_MNIST := /usr/share/datasets/fashion-mnist

.PHONY: setup data reproduce test clean

setup: $(VENV)/.installed data

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

# Debian's package where apt and root are available; otherwise a verified download
# into $$CONVATTN_CACHE (default ~/.cache/convattn).
data: $(VENV)/.installed
	@if [ -f $(FASHION_MNIST)/train-images-idx3-ubyte.gz ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  (apt-get install -y -qq dataset-fashion-mnist || \
	   (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)) >/dev/null; \
	else $(BIN)/convattn download fashion-mnist; fi

# SYDNEY=DIR (or $$CONVATTN_SYDNEY) points to Sydney-Captions; PRESET=fast for the quick version
reproduce: setup
	$(BIN)/convattn reproduce --preset $(PRESET) --out $(OUT) $(if $(SYDNEY),--sydney $(SYDNEY))

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache
