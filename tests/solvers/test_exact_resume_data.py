"""Exact resume through real data layers (the state_dict / load_state_dict protocol of
brewnet/solvers/snapshot.py): HDF5Data with shuffle, and a prefetching Data layer with random crop and mirror,
each stopped mid-epoch.  Training 2n iterations straight equals n, snapshot, restore in a fresh solver, n more."""
import torch

from brewnet.layers.hdf5_data import HDF5DataLayer
from brewnet.proto import caffe_pb2
from brewnet.proto.io import parse_text
from brewnet.solvers import get_solver

from ._nets import golden_workdir

SOLVER = 'base_lr: 0.1 lr_policy: "fixed" momentum: 0.9 display: 0 random_seed: 5 snapshot_prefix: "r" '


def solver_for(net_text):
    return get_solver(parse_text(SOLVER + 'net_param { ' + net_text + ' }', caffe_pb2.SolverParameter()))


def resumed_equals_straight(net_text, n):
    straight = solver_for(net_text)
    straight.step(2 * n)
    first = solver_for(net_text)
    first.step(n)
    state_file = first.snapshot()
    resumed = solver_for(net_text)
    resumed.restore(state_file)
    resumed.step(n)
    try:
        return all(torch.equal(a.data, b.data)
                   for a, b in zip(resumed.net.learnable_params, straight.net.learnable_params))
    finally:
        for solver in (straight, first, resumed):
            solver.net.close()


def shuffled_hdf5_net(source):
    return (source / "net.prototxt").read_text().replace("batch_size: 4", "batch_size: 4 shuffle: true")


def test_2n_equals_n_resume_n_through_shuffled_hdf5_data(golden, tmp_path, monkeypatch):
    source = golden_workdir(golden, tmp_path, monkeypatch)
    # 12 rows, batch 4: the snapshot falls in the middle of an epoch
    assert resumed_equals_straight(shuffled_hdf5_net(source), 5)


def test_control_without_the_layer_state_the_resume_differs(golden, tmp_path, monkeypatch):
    """The same run with HDF5Data's state left out of the side file: proof that the test above can fail."""
    source = golden_workdir(golden, tmp_path, monkeypatch)
    monkeypatch.delattr(HDF5DataLayer, "state_dict")
    assert not resumed_equals_straight(shuffled_hdf5_net(source), 5)


def test_2n_equals_n_resume_n_through_prefetching_data_with_crop_and_mirror(golden, tmp_path, monkeypatch):
    """MNIST records 10 by 10 with a random 20 x 20 crop and mirror: the threads read ahead of the net, the
    snapshot records what the net consumed, and the restore drops what was prefetched."""
    monkeypatch.chdir(tmp_path)
    net = (f'layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TRAIN }} '
           f'transform_param {{ crop_size: 20 mirror: true scale: 0.00390625 }} '
           f'data_param {{ source: "{golden / "files" / "mnist1000_lmdb"}" backend: LMDB batch_size: 10 '
           f'prefetch: 3 }} }} '
           'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
           '        inner_product_param { num_output: 10 weight_filler { type: "xavier" } } } '
           'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }')
    assert resumed_equals_straight(net, 4)
