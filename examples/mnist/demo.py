"""The main job of the README (`make demo`): LeNet on the bundled MNIST digits, end to end.

1. create_mnist: the 8 000 training and 2 000 test digits of data/mnist10k -> two LMDB databases of Datum
   records (Caffe's convert_mnist_data);
2. train LeNet with Caffe's lenet_solver settings (SGD, momentum 0.9, weight decay 5e-4, lr policy "inv",
   10 000 iterations of batch 64, testing every 500 iterations) — the same as
   `caffe train -solver examples/mnist/lenet_solver.prototxt`;
3. report the final test accuracy on the 2 000 test digits.

    python -m examples.mnist.demo [--iterations N] [--data IDX_DIR] [--test-iter N] [--precision bf16]
                                  [--gpu 0] [--compile]

Full Fashion-MNIST (60 000 / 10 000, Debian's dataset-fashion-mnist), as in the book's comparison:
    python -m examples.mnist.demo --data /usr/share/datasets/fashion-mnist --test-iter 100
"""
import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=None, help="override max_iter (default: the solver's)")
    parser.add_argument("--data", default=None, help="a folder of MNIST-format IDX files (default: the bundled "
                                                     "digits); e.g. /usr/share/datasets/fashion-mnist")
    parser.add_argument("--solver", default="examples/mnist/lenet_solver.prototxt")
    parser.add_argument("--test-iter", type=int, default=None,
                        help="override test_iter (e.g. 100 for a 10 000-image test set at batch 100)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                        help="compute precision (brewnet's mixed-precision mode; weights stay fp32)")
    parser.add_argument("--gpu", type=int, default=None, help="train on this CUDA device (caffe train -gpu N)")
    parser.add_argument("--compile", action="store_true",
                        help="replay forward + backward from a CUDA graph (caffe train -compile)")
    args = parser.parse_args(argv)
    os.chdir(ROOT)      # the prototxts name their databases relative to the repository root
    sys.path.insert(0, ROOT)

    from brewnet import set_device, set_mode_gpu, set_random_seed
    from brewnet.solvers import get_solver
    from brewnet.solvers.base import load_solver_param
    from examples.mnist import create_mnist

    create_args = ["--force"] + (["--data", args.data] if args.data else [])
    create_mnist.main(create_args)
    param = load_solver_param(args.solver)
    if args.iterations is not None:
        param.max_iter = args.iterations
    if args.test_iter is not None:
        param.test_iter[:] = [args.test_iter]
    if not param.HasField("random_seed"):
        set_random_seed(1701)
    if args.gpu is not None:
        set_device(args.gpu)
        set_mode_gpu()
    solver = get_solver(param, source=args.solver, precision=args.precision)
    solver.compile = args.compile
    start = time.perf_counter()
    try:
        solver.solve()
        # Caffe's solve() ends with a test when max_iter is a multiple of test_interval; otherwise test now.
        if getattr(solver, "test_results_iter", None) == solver.iter:
            results = [solver.test_results]
        else:
            results = solver.test_all()
    finally:
        solver.close()
    accuracy = results[0]["accuracy"]
    minutes = (time.perf_counter() - start) / 60
    where = f"GPU {args.gpu}" if args.gpu is not None else "CPU"
    print(f"LeNet ({args.precision}{' -compile' if args.compile else ''}, {where}), {solver.iter} iterations in {minutes:.1f} min: test accuracy = {accuracy:.4f} "
          f"on {param.test_iter[0]} x {solver.test_nets[0].blobs['data'].shape[0]} test images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
