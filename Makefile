# Two commands for a newcomer (see README):  make study   and   make test
# Both create .venv in the repo and install the pinned requirements on first use, then reuse them.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum requirements.txt | cut -d' ' -f1)
IDX_DIR := /usr/share/datasets/fashion-mnist
NATIVE := research/backend/native/_build/libresearch_onednn.so
HAVE_ONEDNN := [ -f /usr/include/oneapi/dnnl/dnnl.hpp ] && command -v g++ >/dev/null

.PHONY: setup fashion-mnist-files onednn-files native data study test lint

# The stamp's name is the checksum of requirements.txt, so a change of its content makes a new stamp; its date
# (a fresh clone's requirements.txt is newer than any stamp) does not re-run pip.
$(STAMP): | requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

# Debian's dataset-fashion-mnist holds the offline default dataset; installed when missing and allowed.
fashion-mnist-files:
	@if [ -f $(IDX_DIR)/train-images-idx3-ubyte.gz ] || [ -n "$$FASHION_MNIST_IDX_DIR" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian's dataset-fashion-mnist"; \
	  (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	else \
	  echo "note: Fashion-MNIST IDX files not found; run 'sudo apt-get install dataset-fashion-mnist'" \
	       "or set FASHION_MNIST_IDX_DIR"; \
	fi

# oneDNN convolutions for XLA:CPU (research/backend/native): g++ and Debian's libdnnl-dev, installed when missing
# and allowed; without them the library keeps XLA's own convolutions (slower on CPU, same results).
onednn-files:
	@if $(HAVE_ONEDNN); then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian's libdnnl-dev and g++"; \
	  (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libdnnl-dev g++ >/dev/null \
	    || echo "note: could not install libdnnl-dev and g++: XLA's convolutions are used"; \
	else \
	  echo "note: oneDNN headers or g++ not found; run 'sudo apt-get install libdnnl-dev g++' for faster" \
	       "convolutions on CPU"; \
	fi

$(NATIVE): research/backend/native/onednn_conv.cc $(STAMP)
	@if $(HAVE_ONEDNN); then \
	  $(PY) -m research.backend.native build || echo "note: research/backend/native did not build: XLA's convolutions are used"; \
	else echo "note: skipping research/backend/native (no oneDNN headers or g++): XLA's convolutions are used"; fi

native: onednn-files $(STAMP)
	@$(MAKE) --no-print-directory $(NATIVE)

setup: $(STAMP) fashion-mnist-files native

data: setup
	$(PY) -m research.data prepare fashion_mnist

# The train/test leakage check of Fashion-MNIST, once per machine (about 10 s): its output is kept in runs/.
DATA_CHECK := runs/fashion_mnist-leakage-check.txt
$(DATA_CHECK):
	@mkdir -p runs
	$(PY) -m research.data check fashion_mnist > $@.tmp && mv $@.tmp $@

# The main job: the default study (BatchNorm ablation, quick variant: 3 norms x 3 seeds on Fashion-MNIST with
# the Hessian and smoothness tracked, then a step-size sweep) as a resumable sweep, then its report
# (runs/bn_ablation-quick/report/).
study: data
	@$(MAKE) --no-print-directory $(DATA_CHECK)
	@cat $(DATA_CHECK)
	$(PY) -m experiments.sweep --config experiments/configs/bn_ablation.py:quick \
	    --workdir runs/bn_ablation-quick --parallel 2
	$(PY) -m analysis.report runs/bn_ablation-quick

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache

test: setup lint
	$(PY) -m pytest
