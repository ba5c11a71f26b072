# Two entry points for a fresh machine: `make demo` and `make test`. Both create .venv by themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
EXTRAS ?= test,text,train,oracle,hrtf
TORCH_INDEX ?= # e.g. https://download.pytorch.org/whl/cpu: where pip takes torch from (empty: its configured sources)

.PHONY: demo test test-slow bench lint venv clean ui-deps media-deps real-sound-deps

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0 $(if $(strip $(TORCH_INDEX)),--index-url $(strip $(TORCH_INDEX)))
	$(PY) -m pip install -q --disable-pip-version-check -e '.[$(EXTRAS)]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/avflow demo

lint: $(STAMP)
	$(VENV)/bin/ruff check avflow tests benchmarks scripts

# The browser UI test needs Debian's chromium (installed here when running as root) and the [ui,uitest] extras.
ui-deps: $(VENV)/.ui-stamp
	@command -v chromium >/dev/null || { if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium; \
	  else echo "note: chromium is missing and this is not root; tests/test_ui_browser.py will skip (apt-get install chromium)"; fi; }

$(VENV)/.ui-stamp: $(STAMP)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[$(EXTRAS),ui,uitest]'
	touch $@

# The mux alignment test decodes with Debian's ffmpeg command-line tool, as players do (installed here when running as
# root, like chromium; otherwise tests/test_mux.py skips, and fails under CI=true).
media-deps:
	@command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || { if [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && apt-get install -y -qq ffmpeg; \
	  else echo "note: ffmpeg is missing and this is not root; tests/test_mux.py will skip (apt-get install ffmpeg)"; fi; }

test: lint ui-deps media-deps
	$(VENV)/bin/pytest -q -n 2 --timeout 900

# Real recordings for the sync and side metrics (scripts/make_real_sound_set.py): Debian's sound theme and espeak-ng,
# installed here when running as root.
real-sound-deps:
	@if [ -d /usr/share/sounds/freedesktop/stereo ] && command -v espeak-ng >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq sound-theme-freedesktop espeak-ng; \
	else echo "note: sound-theme-freedesktop or espeak-ng is missing and this is not root (apt-get install them)"; fi

test-slow: $(STAMP) real-sound-deps
	$(VENV)/bin/pytest -q -m slow

bench: $(STAMP) real-sound-deps
	@for f in benchmarks/*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) outputs
