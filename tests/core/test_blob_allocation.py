"""An allocation that cannot succeed (a huge shape in a prototxt) names the layer, the blob and the bytes
instead of torch's bare "can't allocate memory".  The shapes here ask for petabytes, beyond any address
space, so no machine's overcommit policy lets them through."""
import pytest

from brewnet.core.blob import AllocationError, Blob
from brewnet.errors import LayerError
from tests.core.test_net import net_from

HUGE = 1 << 48      # float32 values: 1 PiB


def test_blob_names_itself_and_the_bytes():
    with pytest.raises(AllocationError) as info:
        Blob((HUGE,), name="big")
    assert str(info.value).startswith(f"blob 'big': cannot allocate shape {HUGE} ({HUGE} values, "
                                      f"{HUGE * 4} bytes = 1.049e+06 GiB) on cpu: ")


def test_reshape_to_a_huge_shape_keeps_the_old_memory():
    blob = Blob((2, 3), name="top")
    with pytest.raises(AllocationError, match=f"blob 'top': cannot allocate shape 65536 x 65536 x 65536 "):
        blob.reshape((65536, 65536, 65536))
    assert blob.shape == (2, 3)


@pytest.mark.parametrize("layer, where", [
    ('layer { name: "in" type: "Input" top: "data" '
     'input_param { shape { dim: 65536 dim: 65536 dim: 65536 } } }', "layer 'in' (type Input): blob 'data'"),
    ('layer { name: "dd" type: "DummyData" top: "data" dummy_data_param { shape { dim: 281474976710656 } } }',
     "layer 'dd' (type DummyData): blob 'data'"),
    ('layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 1 dim: 16777216 } } }\n'
     'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
     'inner_product_param { num_output: 16777216 } }', "layer 'ip' (type InnerProduct): blob 'ip.0'"),
])
def test_net_names_the_layer(layer, where):
    with pytest.raises(LayerError) as info:
        net_from(layer)
    assert str(info.value).startswith(f"{where}: cannot allocate shape ")
    assert f"{HUGE * 4} bytes" in str(info.value)
