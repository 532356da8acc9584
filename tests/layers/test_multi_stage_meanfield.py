"""MultiStageMeanfield (CRF-as-RNN): its stages are dense_crf's mean field, its backward is the exact gradient
of the lattice computation (central differences and autograd through the same lattices), and bad bottoms are
named."""
import pytest
import torch

from brewnet.errors import LayerError
from brewnet.layers import permutohedral
from brewnet.layers.dense_crf import bilateral_features, dense_crf, spatial_features
from tests.layers.helpers import check_layer, make_layer, tensor_blob

PARAM = ('type: "MultiStageMeanfield" multi_stage_meanfield_param { num_iterations: 3 theta_alpha: 4 '
         'theta_beta: 30 theta_gamma: 2 spatial_filter_weight: 1.5 bilateral_filter_weight: 2.5 }')


def _inputs(num=2, labels=2, height=4, width=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(num, labels, height, width, generator=g, dtype=torch.float64) * 2
    image = torch.rand(num, 3, height, width, generator=g, dtype=torch.float64) * 255
    return scores, image


def _oracle(unary, q0, image, params, iterations=3, thetas=(4.0, 30.0, 2.0)):
    """The stages written with torch ops over the same lattices, for autograd to differentiate."""
    num, labels, height, width = unary.shape
    spatial_w, bilateral_w, compat = (p.reshape(labels, labels) for p in params)
    spatial = permutohedral.build(spatial_features(height, width, thetas[2], unary.dtype))
    x = q0.reshape(num, labels, -1)
    for _ in range(iterations):
        prob = torch.softmax(x, 1)
        out = []
        for n in range(num):
            lattice = permutohedral.build(bilateral_features(image[n], thetas[0], thetas[1]))
            message = (spatial_w @ spatial.filter(prob[n].t(), normalized=True).t()
                       + bilateral_w @ lattice.filter(prob[n].t(), normalized=True).t())
            out.append(unary[n].reshape(labels, -1) - compat @ message)
        x = torch.stack(out)
    return x.reshape(unary.shape)


def test_gradients_through_all_stages_and_parameters():
    scores, image = _inputs()
    g = torch.Generator().manual_seed(3)
    eye, noise = torch.eye(2, dtype=torch.float64), lambda: 0.1 * torch.randn(2, 2, generator=g, dtype=torch.float64)
    params = [1.5 * eye + noise(), 2.5 * eye + noise(), -eye + noise()]
    q0 = scores + 0.3 * torch.randn(scores.shape, generator=g, dtype=torch.float64)
    check_layer(PARAM, [scores, q0, image], [scores.shape], grad_bottoms=[0, 1], record=False,
                params=[p.reshape(1, 1, 2, 2) for p in params], oracle=_oracle)


def test_stages_are_dense_crf_mean_field_on_the_scores():
    """With Q0 = the unary (crfasrnn's Split), softmax of the top is dense_crf's marginals in crfasrnn's units:
    weights Ws = 1.5 I, Wb = 2.5 I from the parameter message, compatibility -I (Potts)."""
    scores, image = _inputs(num=2, labels=4, height=12, width=10, seed=1)
    layer = make_layer(PARAM)
    bottom = [tensor_blob(scores), tensor_blob(scores.clone()), tensor_blob(image)]
    top = [tensor_blob(torch.zeros(1, dtype=torch.float64))]
    layer.setup(bottom, top)
    layer.Forward(bottom, top)
    marginals = torch.softmax(top[0].data, 1)
    torch.testing.assert_close(marginals.sum(1), torch.ones(2, 12, 10, dtype=torch.float64), rtol=0, atol=1e-12)
    expected = dense_crf(scores, image, 4.0, 30.0, 2.0, w_bilateral=2.5, w_spatial=1.5, iterations=3,
                         unary_kind="scores")
    torch.testing.assert_close(marginals, expected, rtol=1e-10, atol=1e-12)
    # The blobs crfasrnn's setup makes: weights on the diagonal, -identity compatibility.
    assert torch.equal(layer.blobs[0].data[0, 0], 1.5 * torch.eye(4, dtype=torch.float64))
    assert torch.equal(layer.blobs[1].data[0, 0], 2.5 * torch.eye(4, dtype=torch.float64))
    assert torch.equal(layer.blobs[2].data[0, 0], -torch.eye(4, dtype=torch.float64))


def test_the_crf_changes_the_labelling_towards_the_image():
    """A noisy unary over a two-region image: the stages pull the labels to the regions (mean field's job)."""
    height, width = 16, 16
    truth = torch.zeros(height, width, dtype=torch.long)
    truth[:, 8:] = 1
    image = torch.where(truth.bool(), 200.0, 40.0).to(torch.float64).expand(1, 3, height, width).clone()
    g = torch.Generator().manual_seed(5)
    scores = torch.stack([(truth == 0).double(), (truth == 1).double()])[None] * 1.0
    scores = scores + 1.2 * torch.randn(scores.shape, generator=g, dtype=torch.float64)
    layer = make_layer('type: "MultiStageMeanfield" multi_stage_meanfield_param { num_iterations: 5 '
                       'theta_alpha: 5 theta_beta: 20 theta_gamma: 2 spatial_filter_weight: 3 '
                       'bilateral_filter_weight: 5 }')
    bottom = [tensor_blob(scores), tensor_blob(scores.clone()), tensor_blob(image)]
    top = [tensor_blob(torch.zeros(1, dtype=torch.float64))]
    layer.setup(bottom, top)
    layer.Forward(bottom, top)
    before = (scores[0].argmax(0) == truth).double().mean().item()
    after = (top[0].data[0].argmax(0) == truth).double().mean().item()
    assert before < 0.85 and after == 1.0, (before, after)


def test_per_label_weight_strings_of_the_crfrnn_branch():
    layer = make_layer('type: "MultiStageMeanfield" multi_stage_meanfield_param { num_iterations: 2 '
                       'spatial_filter_weights_str: "1 2 3" bilateral_filter_weights_str: "4 5 6" }')
    scores, image = _inputs(num=1, labels=3, height=5, width=6)
    bottom = [tensor_blob(scores), tensor_blob(scores), tensor_blob(image)]
    layer.setup(bottom, [tensor_blob(torch.zeros(1, dtype=torch.float64))])
    assert layer.blobs[0].data[0, 0].diagonal().tolist() == [1, 2, 3]
    assert layer.blobs[1].data[0, 0].diagonal().tolist() == [4, 5, 6]


@pytest.mark.parametrize("shapes,message", [
    ([(1, 3, 5, 6), (1, 3, 5, 5), (1, 3, 5, 6)], r"Q0 shaped like the unary \[1, 3, 5, 6\], Actual: \[1, 3, 5, 5\]"),
    ([(1, 3, 5, 6), (1, 3, 5, 6), (1, 1, 5, 6)], r"an image of shape \[1, 3, 5, 6\].*Actual: \[1, 1, 5, 6\]"),
    ([(1, 3, 5, 6), (1, 3, 5, 6), (1, 3, 6, 5)], r"an image of shape \[1, 3, 5, 6\].*Actual: \[1, 3, 6, 5\]"),
])
def test_bottoms_of_other_sizes_are_named(shapes, message):
    layer = make_layer(PARAM)
    bottom = [tensor_blob(torch.rand(s, dtype=torch.float64)) for s in shapes]
    with pytest.raises(LayerError, match=message) as info:
        layer.setup(bottom, [tensor_blob(torch.zeros(1, dtype=torch.float64))])
    assert "'L'" in str(info.value) and "MultiStageMeanfield" in str(info.value)


def test_bad_parameters_are_named():
    scores, image = _inputs(num=1, labels=3, height=5, width=6)
    for text, message in [("num_iterations: 0", r"num_iterations >= 1, Actual: 0"),
                          ("theta_beta: 0", r"theta_beta > 0, Actual: 0"),
                          ('spatial_filter_weights_str: "1 2"', r"hold 3 numbers \(one per label\), Actual: '1 2'")]:
        layer = make_layer(f'type: "MultiStageMeanfield" multi_stage_meanfield_param {{ {text} }}')
        with pytest.raises(LayerError, match=message):
            layer.setup([tensor_blob(scores), tensor_blob(scores), tensor_blob(image)],
                        [tensor_blob(torch.zeros(1, dtype=torch.float64))])
