# Two commands for a new machine:
#   make train   sets everything up, then trains the default experiment (config/vmas-navigation-ppo.yaml)
#   make test    sets everything up, then runs the whole test suite
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed

NATIVE := envs/bucket_brigade/native
NATIVE_LIB := $(NATIVE)/target/release/libbucket_brigade_core.so

.PHONY: setup xvfb slurm train test

setup: $(STAMP) xvfb $(NATIVE_LIB)

# The Bucket Brigade core: a dependency-free Rust crate (crates.io is not needed), loaded with ctypes.
$(NATIVE_LIB): $(NATIVE)/Cargo.toml $(wildcard $(NATIVE)/src/*.rs)
	@command -v cargo >/dev/null || { echo "error: cargo (Rust) is needed to build the Bucket Brigade core; install it (apt-get install cargo, or rustup) and re-run make"; exit 1; }
	cargo build --release --offline --quiet --manifest-path $(NATIVE)/Cargo.toml

# Xvfb gives renderers a virtual display on headless machines (videos; Unity games). Installed where we are root.
# Where it cannot be, the tests that need it skip saying why, except under CI (CI=true), where they fail.
xvfb:
	@command -v Xvfb >/dev/null || $(call apt_install,xvfb,Xvfb,recording needs EGL or a display)

# A real Slurm for tests/test_slurm.py (Debian's packages; the test starts and stops its own daemons). Where it cannot
# be installed, those tests skip saying why, except under CI (CI=true), where they fail.
SLURM_PACKAGES := slurm-wlm slurmctld slurmd slurm-client munge
slurm:
	@{ command -v slurmctld && command -v munged; } >/dev/null || $(call apt_install,--no-install-recommends $(SLURM_PACKAGES),Slurm,tests/test_slurm.py cannot run)

# $(call apt_install,apt-get install arguments,what,consequence): apt-get install as root (updating the lists when the first try fails);
# a note saying why when that is impossible (not root, no apt-get) or fails.
apt_install = { [ "$$(id -u)" = 0 ] || { echo "note: $(2) is not installed and cannot be installed here (not root): $(3)"; \
	exit 0; }; command -v apt-get >/dev/null || { echo "note: $(2) is not installed and there is no apt-get here: $(3)"; \
	exit 0; }; export DEBIAN_FRONTEND=noninteractive; apt-get install -y -qq $(1) >/dev/null 2>&1 \
	|| { apt-get update -qq && apt-get install -y -qq $(1) >/dev/null; } \
	|| echo "note: apt-get could not install $(2) (see its error above): $(3)"; }

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# uv installs the pinned requirements in ~40 s where pip takes ~2 min (both byte-compiled, which these machines'
	# PYTHONDONTWRITEBYTECODE=1 makes matter); it is given the indexes and wheel folders of pip's own configuration
	# (the build machines keep wheels on disk) and, like pip, takes the best match over all of them.
	$(PY) -m pip install --quiet --disable-pip-version-check uv==0.9.9 2>&1 | { grep -v "is ignored: it is neither" || true; }
	$(VENV)/bin/uv pip install --quiet --python $(PY) --index-strategy unsafe-best-match --compile-bytecode \
		$$($(PY) -m pip config list 2>/dev/null | sed -nE "s/^[^.]+\.(extra-index-url|index-url|find-links)='(.*)'$$/\1 \2/p" \
		| while read -r option values; do for value in $$values; do echo "--$$option $$value"; done; done) \
		-r requirements.txt
	# mlagents-envs 1.1.0 declares Python <= 3.10 and pins protobuf < 3.21 and numpy < 1.24; its code runs on this
	# stack (envs/unity/pb_compat.py loads its protobuf modules), so it gets its own step without its declared pins.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --ignore-requires-python mlagents-envs==1.1.0 2>&1 \
		| { grep -v "is ignored: it is neither" || true; }
	$(PY) -c "import ray, torch, vmas, benchmarl, wandb, cv2, xvfbwrapper, grpc, PIL, mlagents_envs, xdist"
	touch $(STAMP)

train: setup
	$(PY) train.py -f config/vmas-navigation-ppo.yaml --checkpoint-freq 10 --checkpoint-at-end --local-dir results

# Most tests are tiny real runs whose time goes to starting processes (Python imports, Ray, actors), which leaves a
# core idle much of the time: two test files at once (pytest-xdist, one file per worker so that module fixtures run
# once, the longest first: tests/conftest.py) finish sooner on 2 cores. Tests marked `serial` (speed
# ratios) then run alone. The docstrings' examples of the two packages run first.
test: setup slurm
	cargo test --release --offline --quiet --manifest-path $(NATIVE)/Cargo.toml
	$(PY) -m pytest -q --doctest-modules marlkit envs
	$(PY) -m pytest -rs --durations=30 -n 2 --dist loadfile --no-loadscope-reorder -m "not serial" tests
	$(PY) -m pytest -rs --durations=5 -m serial tests
