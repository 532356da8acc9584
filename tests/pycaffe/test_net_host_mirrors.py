"""pycaffe Net with host mirrors: the GPU-mode coherence of NumPy arrays, emulated on the CPU."""
import numpy as np
import pytest

import caffe


# --- GPU-mode coherence, emulated: blobs whose NumPy arrays are host copies (no shared memory) ------------------------
@pytest.fixture
def host_mirrors(monkeypatch):
    """Make every blob view behave as on a GPU: `.data` / `.diff` are host copies kept until synced (the
    non-CPU branch of PyBlob), so only the pycaffe layer's sync points carry writes into the net."""
    from brewnet.pycaffe.blob import PyBlob

    def mirrored(self, which):
        tensor = getattr(self.blob, which)
        cached = self._host.get(which)
        if cached is not None and cached[0] is tensor:
            return cached[1]
        if cached is not None:
            self._flush_one(*cached)
        host = tensor.detach().cpu().numpy().copy()
        self._host[which] = (tensor, host)
        return host
    monkeypatch.setattr(PyBlob, "_array", mirrored)


def test_host_mirrors_stay_coherent(host_mirrors, deploy, nets, digits, tmp_path):
    reference = caffe.Net(deploy, caffe.TEST, weights=str(nets / "lenet_test.caffemodel"))
    expected = reference.forward(data=digits["data"])["prob"].copy()
    net = caffe.Net(deploy, caffe.TEST, weights=str(nets / "lenet_test.caffemodel"))
    net.blobs["data"].data[...] = digits["data"]             # written into the mirror only...
    assert not net._net.blobs["data"].data.numpy().any()     # ...not yet into the net's tensor
    np.testing.assert_allclose(net.forward()["prob"], expected, rtol=1e-5)   # forward syncs first
    out = net.forward(data=digits["data"][::-1].copy())["prob"]              # a new input, a fresh read
    np.testing.assert_allclose(out, expected[::-1], rtol=1e-4, atol=1e-6)
    net.params["ip2"][0].data[...] = 0                        # parameter edits reach the next forward
    net.params["ip2"][1].data[...] = 0
    np.testing.assert_allclose(net.forward()["prob"], 0.1, rtol=1e-6)
    net.save(str(tmp_path / "zeroed.caffemodel"))            # and the saved file
    saved = caffe.Net(deploy, caffe.TEST, weights=str(tmp_path / "zeroed.caffemodel"))
    assert not saved.params["ip2"][0].data.any()


def test_host_mirrors_with_a_solver(host_mirrors, tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text("""
        layer { name: "x" type: "Input" top: "x" top: "y" input_param { shape { dim: 4 dim: 3 } shape { dim: 4 dim: 2 } } }
        layer { name: "ip" type: "InnerProduct" bottom: "x" top: "p"
                inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 } } }
        layer { name: "loss" type: "EuclideanLoss" bottom: "p" bottom: "y" top: "loss" }""")
    solver_file = tmp_path / "solver.prototxt"
    solver_file.write_text(f'net: "{path}" base_lr: 0.1 lr_policy: "fixed" max_iter: 5 display: 0 '
                           f'snapshot_after_train: false snapshot_prefix: "{tmp_path}/s"')
    solver = caffe.SGDSolver(str(solver_file))
    x, y = np.random.RandomState(0).randn(4, 3), np.random.RandomState(1).randn(4, 2)
    solver.net.blobs["x"].data[...] = x
    solver.net.blobs["y"].data[...] = y
    w = solver.net.params["ip"][0].data.copy()
    b = solver.net.params["ip"][1].data.copy()
    seen = []

    def on_gradients_ready():
        grad = solver.net.params["ip"][0].diff                # read after the device computed it
        seen.append(grad.copy())
        grad[...] *= 2                                        # edited on the host, used by the update
    solver.add_callback(lambda: None, on_gradients_ready)
    solver.step(1)
    residual = (x @ w.T + b - y) / 4
    np.testing.assert_allclose(seen[0], residual.T @ x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(solver.net.params["ip"][0].data, w - 0.1 * 2 * residual.T @ x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(solver.net.blobs["loss"].data, (residual ** 2).sum() * 4 / 2, rtol=1e-5)
