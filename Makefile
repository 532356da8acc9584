# brewnet — the two set-up commands of the README live here.
#   make demo : build the MNIST databases from the bundled digits, train LeNet, report test accuracy
#   make test : the whole test suite (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PIP     = $(PY) -m pip

.PHONY: venv test demo proto bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# The CPU torch wheel first: a plain `torch` requirement would pull a multi-GB CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[test]'
	# an editable install leaves out the wheel's brewnet-caffe-check.pth (setup.py): write it
	$(PY) -m _brewnet_caffe_check install
	touch $@

venv: $(VENV)/.installed

test: venv
	$(PY) -m pytest -x -rs -p no:cacheprovider tests

demo: venv
	$(PY) -m examples.mnist.demo

bench: venv
	$(PY) -m benchmarks.run_all

# Regenerate brewnet/proto/caffe_pb2.py from brewnet/proto/caffe.proto (the hand-maintained source) with the
# protoc of the `dev` extra (grpcio-tools, from PyPI).
proto: venv
	$(PY) -c 'import grpc_tools' 2>/dev/null || $(PIP) install -q -e '.[dev]'
	$(PY) scripts/gen_pb2.py brewnet/proto

clean:
	rm -rf $(VENV) build *.egg-info
