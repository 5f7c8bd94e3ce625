# metarl: set-up, tests and the main job.
#   make train   set up this machine (if needed) and run the main job
#   make test    set up this machine (if needed) and run the fast tests
# Override the interpreter with `make test PYTHON=.venv/bin/python`.

PYTHON ?= python3
# CPU wheel on machines without torch; pip's configured find-links hold 2.13.0+cpu, which this pin selects.
TORCH_VERSION ?= 2.13.0
PYTEST := $(PYTHON) -m pytest

# Offscreen MuJoCo rendering; render-marked tests skip themselves where EGL is unavailable.
export MUJOCO_GL ?= egl

# The install stamp is per interpreter environment and is redone whenever pyproject.toml changes.
ENV_KEY := $(shell $(PYTHON) -c "import hashlib, sys; print(hashlib.sha1(sys.prefix.encode()).hexdigest()[:10])" 2>/dev/null)
STAMP := .make/install-$(ENV_KEY).stamp
# True when the `metarl` distribution is installed (editable) in this environment.
INSTALLED := $(PYTHON) -c "import importlib.metadata as m; m.distribution('metarl')"

.PHONY: install test train lint slow gpu clean

install: $(STAMP)
	@$(INSTALLED) 2>/dev/null || { rm -f $(STAMP); $(MAKE) --no-print-directory $(STAMP); }

# Keep an installed torch (e.g. a CUDA build): pip sees `torch>=2.3` satisfied and never replaces it
# with a multi-GB download. Without torch, install the pinned CPU wheel first.
$(STAMP): pyproject.toml
	@if $(PYTHON) -c "import torch" 2>/dev/null; then \
		echo "keeping installed torch $$($(PYTHON) -c 'import torch; print(torch.__version__)')"; \
	else \
		$(PYTHON) -m pip install "torch==$(TORCH_VERSION)"; \
	fi
	$(PYTHON) -m pip install -e ".[dev]"
	@mkdir -p $(@D) && touch $@

test: install
	$(PYTEST) -m "not slow and not gpu" -q

# Main job: meta-train the default (attention) policy on half_cheetah_vel into runs/.
train: install
	$(PYTHON) scripts/meta_train.py --env half_cheetah_vel

lint: install
	$(PYTHON) -m ruff check .
	$(PYTHON) -m mypy

# Exit code 5 means no test carries the marker yet; that is not a failure.
slow: install
	$(PYTEST) -m slow || [ $$? -eq 5 ]

# On a GPU machine: the gpu-marked tests, then the learner benchmark with the learner on CUDA.
gpu: install
	$(PYTEST) -m gpu || [ $$? -eq 5 ]
	$(PYTHON) scripts/benchmark.py learner --device cuda

clean:
	rm -rf .make build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
