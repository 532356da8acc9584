"""brewnet's runtime: what brewnet adds to Caffe's Net and Solver for speed and precision, behind one seam.

core/net.py and solvers/base.py read like the book (5.5, 5.6); they reach this package only through the hooks
of two objects, one per net and one per solver:

    net.runtime      (net_runtime.py)     pass_scope(), fused_group(i, low, high), check_values(),
                                          clear_param_diffs()
    solver.runtime   (solver_runtime.py)  reads_late(display), forward_backward(read), forward(net),
                                          finish_gradients(), update(late, losses, start_iter)

and the layers through three entry points: deferred.add_to_diffs / scale_add (small blob updates applied
together at the end of a pass), device_checks.deferring (label checks read where the pass reads its loss) and
precision.lowered_call (bf16 / fp16 matrix products).  The other way round, this package asks the layers
about their capabilities (core/layer.py: not_recordable, fusion, keeps_running_statistics()) and matches no
layer type string.

    net_runtime.py      the hooks of a Net, autograd off, dropping cleared diffs
    solver_runtime.py   the hooks of a Solver: precision, -compile, the loss read after the update
    deferred.py         small parameter-blob updates gathered over a pass
    device_checks.py    checks of device values read once per pass
    fusion.py           layers run as one step (groups named by the layers: layers/batch_norm_scale.py)
    running_sums.py     BatchNorm statistics packed into one tensor per net
    late_read.py        why the loss is read after the update on an accelerator, and the undo copies
    precision.py        bf16 / fp16 compute with fp32 master weights, loss scaling
    capture.py          -compile: forward + backward recorded into a CUDA graph and replayed

Every switch (BREWNET_* variable, in-code flag, API setter) is listed in brewnet/switches.py.
"""
