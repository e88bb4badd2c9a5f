# Two commands on a fresh machine:
#   make demo   install, train the offline default model if absent, build the index if absent, serve the app
#   make test   install, check the import layers (lint-imports), run the test suite (what CI runs)
# Installs take the exact versions of requirements.lock (every direct and transitive dependency, for Python 3.11 on
# Linux; `make lock` refreshes it, docs/development.md); requirements.txt keeps the loose ranges for library users.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CATALOG ?= ../shared/data
MODEL ?= runs/dual-encoder
BASE ?= $(MODEL)-base
OFFLINE := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 \
	GRADIO_ANALYTICS_ENABLED=False

TORCH_VERSION := 2.13.0
PIP_VERSION := 26.3
UV_VERSION := 0.13.8
LOCK_TOOLS ?= .lock-tools
# Where the CPU build of torch lies when locking (a folder of wheels; pip's find-links on this machine kind).
TORCH_WHEELS ?= /opt/wheels
# The extra package indexes pip is configured with, so the lock resolves from what `pip install` sees.
PIP_INDEXES = $(shell $(PYTHON) -m pip config get global.extra-index-url 2>/dev/null)

.PHONY: install lock check-lock demo demo-estimate train models evaluate test clean

install: $(VENV)/.installed

# torch first from its CPU wheel (never a CUDA build, never torchvision); then exactly the locked versions, torch
# constrained so pip never pulls another build.
$(VENV)/.installed: requirements.lock constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q pip==$(PIP_VERSION)
	$(PY) -m pip install -q torch==$(TORCH_VERSION)
	$(PY) -m pip install -q -r requirements.lock -c constraints.txt
	touch $@

# requirements.lock from requirements.txt: one resolution for Python 3.11 with torch's CPU wheel, the versions
# already locked kept where they still fit (`make lock UPGRADE=--upgrade` moves everything to the newest).
lock: $(LOCK_TOOLS)/bin/uv
	echo "torch==$(TORCH_VERSION)+cpu" > $(LOCK_TOOLS)/torch-cpu.txt
	$(LOCK_TOOLS)/bin/uv pip compile requirements.txt -c constraints.txt -c $(LOCK_TOOLS)/torch-cpu.txt \
		--python-version 3.11 --find-links $(TORCH_WHEELS) $(foreach index,$(PIP_INDEXES),--extra-index-url $(index)) \
		--index-strategy unsafe-best-match --no-annotate --custom-compile-command "make lock" $(UPGRADE) \
		-o requirements.lock

$(LOCK_TOOLS)/bin/uv:
	$(PYTHON) -m venv $(LOCK_TOOLS)
	$(LOCK_TOOLS)/bin/pip install -q uv==$(UV_VERSION)

# What CI checks after installing: the environment holds exactly requirements.lock (pip freeze = the lock).
check-lock: install
	$(PY) .ci/check_lock.py --lock requirements.lock --requirements requirements.txt

$(BASE)/model.safetensors: | install
	@echo "No model at $(MODEL): training the default dual encoder on $(CATALOG)."
	@echo "This takes about 25 minutes on 2 CPU cores (progress bars below); it happens once."
	$(OFFLINE) $(PY) train.py --model dual-encoder --catalog $(CATALOG) --output $(BASE)

# Second stage (about 2 minutes): the learned combiner of composed search (photo + "make it blue").
$(MODEL)/model.safetensors: $(BASE)/model.safetensors
	$(OFFLINE) $(PY) train.py --stage composed --init-from $(BASE) --catalog $(CATALOG) --output $(MODEL)

train: $(MODEL)/model.safetensors

# The other models of the comparison table (CPU times on 2 cores): the VAE (~12 min), the plain autoencoder
# (VAE with beta = 0, ~6 min) and the dual encoder trained without Kurtas for the out-of-domain analysis (~14 min).
runs/vae/model.safetensors: | install
	$(OFFLINE) $(PY) train.py --model vae --catalog $(CATALOG) --output runs/vae
runs/autoencoder/model.safetensors: | install
	$(OFFLINE) $(PY) train.py --model vae --beta 0 --epochs 15 --catalog $(CATALOG) --output runs/autoencoder
runs/dual-encoder-no-kurtas/model.safetensors: | install
	$(OFFLINE) $(PY) train.py --model dual-encoder --exclude articleType=Kurtas --epochs 10 --catalog $(CATALOG) \
		--output runs/dual-encoder-no-kurtas

models: train runs/vae/model.safetensors runs/autoencoder/model.safetensors \
	runs/dual-encoder-no-kurtas/model.safetensors

# Every model and baseline on the test split: runs/eval/results.md, plots, and the regenerated model_card.md.
evaluate: models
	$(OFFLINE) $(PY) evaluate.py --all --model $(MODEL) --model runs/vae --model runs/autoencoder \
		--ood-model runs/dual-encoder-no-kurtas --ood articleType=Kurtas --rerank-model runs/vae \
		--catalog $(CATALOG) --split test --output runs/eval --model-card model_card.md

# Printed first: what `make demo` still has to do and how long that took on the 2-core machine of the issue
# (Xeon, 2 cores, fresh clone: install 4 min, training 59 + 3 min, index about 6 min, start 7 s).
demo-estimate:
	@total=0; steps=""; \
	test -f $(VENV)/.installed || { total=$$((total + 4)); steps="$$steps install ~4 min,"; }; \
	test -f $(BASE)/model.safetensors || { total=$$((total + 59)); steps="$$steps train ~25-60 min,"; }; \
	test -f $(MODEL)/model.safetensors || { total=$$((total + 3)); steps="$$steps combiner ~3 min,"; }; \
	test -f $(MODEL)/index/manifest.json || { total=$$((total + 6)); steps="$$steps index ~6 min,"; }; \
	test -f $(MODEL)/index/photo-128x96/manifest.json || { total=$$((total + 6)); \
		steps="$$steps second photo index ~5 min,"; }; \
	if [ $$total -eq 0 ]; then echo "make demo: everything is in place; the app answers in about 10 s."; \
	else steps="$${steps%,}"; echo "make demo: up to about $$total minutes to the first answer on 2 CPU cores "\
	"($${steps# }); less on more cores."; fi

demo: demo-estimate install train
	$(OFFLINE) $(PY) app.py --model $(MODEL) --catalog $(CATALOG)

test: install
	$(VENV)/bin/lint-imports
	$(OFFLINE) $(PY) -m pytest

clean:
	rm -rf $(VENV) $(LOCK_TOOLS) .pytest_cache
