"""CenterLoss in data-parallel training (`caffe train -procs 2`): the centers are averaged across the ranks like
any weight.  Caffe-face's center update is not linear in the batch (its 1 + n_k), so 2 ranks x batch B are
compared with one process running iter_size 2 x batch B over the same two half-batches: the solver averages
those two diffs exactly as the ranks' all-reduce does."""
import numpy as np

from brewnet.data.datum import array_to_datum
from brewnet.data.db import format_key, open_db
from brewnet.proto import caffe_pb2
from brewnet.solvers import get_solver
from brewnet.tools import cli

RECORDS, BATCH, ITERS = 16, 2, 6

NET = """
name: "dp_centers"
layer {{ name: "data" type: "Data" top: "data" top: "label" data_param {{ source: "{db}" backend: LMDB
        batch_size: {batch} }} }}
layer {{ name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
        inner_product_param {{ num_output: 2 weight_filler {{ type: "gaussian" std: 0.5 }} }} }}
layer {{ name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        inner_product_param {{ num_output: 3 weight_filler {{ type: "gaussian" std: 0.5 }} }} }}
layer {{ name: "softmax_loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "softmax_loss" }}
layer {{ name: "center_loss" type: "CenterLoss" bottom: "ip1" bottom: "label" top: "center_loss"
        param {{ lr_mult: 1 decay_mult: 0 }} center_loss_param {{ cluster_num: 3 alpha: 0.5 loss_weight: 0.1
        center_filler {{ type: "gaussian" std: 1 }} }} }}
"""

SOLVER = """
net: "{net}"
type: "SGD" base_lr: 0.1 momentum: 0.9 weight_decay: 0.01 lr_policy: "fixed" iter_size: {iter_size}
max_iter: {iters} display: 0 random_seed: 7 snapshot_prefix: "{prefix}"
"""


def write_db(path, order):
    values = np.random.RandomState(3).uniform(-1, 1, (RECORDS, 1, 1, 4)).astype(np.float32)
    with open_db(path, "lmdb", "n") as db:
        txn = db.transaction()
        for position, record in enumerate(order):
            txn.put(format_key(position), array_to_datum(values[record] + record % 3,
                                                         label=record % 3).SerializeToString())
        txn.commit()


def write_solver(folder, name, iter_size):
    net = folder / f"{name}_net.prototxt"
    net.write_text(NET.format(db=folder / f"{name}_db", batch=BATCH))
    solver = folder / f"{name}_solver.prototxt"
    solver.write_text(SOLVER.format(net=net, iters=ITERS, prefix=folder / name, iter_size=iter_size))
    return solver


def test_two_ranks_average_the_centers_update_like_iter_size_two(tmp_path):
    # Rank r reads records r, r+2, r+4, ... (2 per iteration), so iteration t gives rank 0 records 4t, 4t+2
    # and rank 1 records 4t+1, 4t+3; the single process's database holds them as its two half-batches.
    write_db(tmp_path / "ranks_db", range(RECORDS))
    write_db(tmp_path / "single_db", [4 * (p // 4) + 2 * (p % 2) + (p % 4) // 2 for p in range(RECORDS)])
    assert cli.main(["train", "-solver", str(write_solver(tmp_path, "ranks", 1)), "-procs", "2"]) == 0
    model = caffe_pb2.NetParameter.FromString((tmp_path / f"ranks_iter_{ITERS}.caffemodel").read_bytes())
    trained = {layer.name: [np.array(b.data, dtype=np.float32) for b in layer.blobs] for layer in model.layer}

    single = get_solver(str(write_solver(tmp_path, "single", 2)))
    initial = single.net.layer_by_name("center_loss").blobs[0].data.numpy().copy()
    single.solve()
    for name in ("ip1", "ip2", "center_loss"):
        for got, want in zip(trained[name], single.net.layer_by_name(name).blobs):
            np.testing.assert_allclose(got, want.data.numpy().ravel(), rtol=1e-5, atol=1e-6, err_msg=name)
    assert np.abs(trained["center_loss"][0] - initial.ravel()).max() > 1e-3      # the centers did move
    single.close()
