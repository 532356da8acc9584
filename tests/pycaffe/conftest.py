"""Fixtures of the pycaffe Net tests: Caffe's golden LeNet files, a LeNet deploy prototxt, its test digits."""
import numpy as np
import pytest

LENET_DEPLOY = """
name: "LeNet"
force_backward: true
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 64 dim: 1 dim: 28 dim: 28 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 20 kernel_size: 5 stride: 1 } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
        convolution_param { num_output: 50 kernel_size: 5 stride: 1 } }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool2" top: "ip1" inner_product_param { num_output: 500 } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" inner_product_param { num_output: 10 } }
layer { name: "prob" type: "Softmax" bottom: "ip2" top: "prob" }
"""


@pytest.fixture
def nets(golden):
    return golden / "nets"


@pytest.fixture
def deploy(tmp_path):
    path = tmp_path / "lenet_deploy.prototxt"
    path.write_text(LENET_DEPLOY)
    return str(path)


@pytest.fixture
def digits(nets):
    return np.load(nets / "lenet_test.inputs.npz")


def linear_net(tmp_path, rows, columns):
    """caffe.Net over Input (rows x columns) -> InnerProduct with 2 outputs, force_backward, TEST phase."""
    path = tmp_path / "lin.prototxt"
    path.write_text(f"""force_backward: true
        layer {{ name: "x" type: "Input" top: "x" input_param {{ shape {{ dim: {rows} dim: {columns} }} }} }}
        layer {{ name: "ip" type: "InnerProduct" bottom: "x" top: "y"
                inner_product_param {{ num_output: 2 weight_filler {{ type: "gaussian" }} }} }}""")
    import caffe
    return caffe.Net(str(path), caffe.TEST)
