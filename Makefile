# The README's two commands: `make reproduce` (the study) and `make test`, and `make serve`
# (the trained models in a browser). All set up what they need first: a .venv with the
# pinned dependencies (pyproject.toml), the Fashion-MNIST files, and chromium for the
# browser test.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
OUT ?= report
PRESET ?= homework
FASHION_MNIST := /usr/share/datasets/fashion-mnist

.PHONY: setup data browser reproduce test test-fast serve clean

setup: $(VENV)/.installed data browser

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

# Debian's chromium and chromedriver, for the page's test in a real browser (tests/serve);
# only where apt and root are available, and a failure only makes that test skip.
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  (apt-get install -y -qq chromium chromium-driver || \
	   (apt-get update -qq && apt-get install -y -qq chromium chromium-driver)) >/dev/null 2>&1 || \
	  echo "chromium not installed (apt-get failed): the browser test will be skipped"; \
	fi

# Sydney-Captions: SYDNEY=DIR (or $$CONVATTN_SYDNEY), ./data/sydney-captions or the cache;
# when none has it, reproduce downloads it into the cache (offline: Q3 says how to get it).
# RSICD=DIR or RSICD=download adds the RSICD benchmark; PRESET=fast for the quick version.
reproduce: setup
	$(BIN)/convattn reproduce --preset $(PRESET) --out $(OUT) $(if $(SYDNEY),--sydney $(SYDNEY)) \
	  $(if $(RSICD),--rsicd $(RSICD))

test: setup
	$(BIN)/python -m pytest -q

# the inner loop: the suite without the tests marked slow (processes, browsers, full datasets)
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

# the models, test set and report of the last `make reproduce` in $(OUT), on 127.0.0.1:$(PORT)
PORT ?= 8000
serve: setup
	$(BIN)/convattn serve $(if $(filter-out report,$(OUT)),--report $(OUT)) --port $(PORT)

clean:
	rm -rf $(VENV) .pytest_cache
