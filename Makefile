# The two commands a newcomer needs: `make demo` and `make test`. Each installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME := $(VENV)/.runtime
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 3
export PYTHONWARNINGS ?= ignore::UserWarning,ignore::DeprecationWarning,ignore::FutureWarning
DEMO_OUT ?= demo-out

.PHONY: install runtime demo test bench clean browser

# Idempotent: each is rebuilt only when its pins or setup.py change. `make demo` installs the
# runtime alone (local generation); `make test` adds the extras and the test tools into the
# same environment.
runtime: $(RUNTIME)
install: $(STAMP)

$(RUNTIME): requirements.txt setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $(RUNTIME)

$(STAMP): $(RUNTIME) requirements-test.txt
	$(BIN)/pip install -q -r requirements-test.txt
	touch $(STAMP)

# The main job on embedded defaults: 10,000 confident digits from the shipped models.
demo: runtime
	$(BIN)/kepkreator generate --spec jobs/demo/digits.yaml --out $(DEMO_OUT) --overwrite

test: install browser
	$(BIN)/python -m pytest -q -n 2 tests

# The web page test drives Debian's headless Chromium; install it where we may (root or sudo),
# otherwise that one test skips and says why.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo "sudo -n" ); \
	  ( $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive \
	    $$SUDO apt-get install -y -q chromium chromium-driver ) >/dev/null 2>&1 \
	  || echo "note: could not install chromium; the browser test will skip"; }

bench: install
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache $(DEMO_OUT)
