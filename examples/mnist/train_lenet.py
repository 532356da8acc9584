"""Caffe's examples/mnist/train_lenet.sh:  caffe train --solver=examples/mnist/lenet_solver.prototxt

    python examples/mnist/train_lenet.py [extra caffe flags, e.g. -iterations 1000 or -solver ...adam...]

Run from the repository root after create_mnist.py (the prototxts name their databases relative to it).
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from brewnet.tools.cli import main  # noqa: E402

if __name__ == "__main__":
    args = sys.argv[1:]
    if not any(a.lstrip("-").startswith("solver") for a in args):
        args = ["--solver=examples/mnist/lenet_solver.prototxt"] + args
    sys.exit(main(["train"] + args))
