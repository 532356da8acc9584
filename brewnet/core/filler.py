"""Fillers: how parameter blobs get their initial values (Caffe's filler.hpp).

  constant            value
  uniform             U(min, max)
  gaussian            N(mean, std); with `sparse` = s, each weight is kept with probability s / num_outputs
  positive_unitball   U(0, 1), then each output's weights are divided by their sum
  xavier              U(-a, a), a = sqrt(3 / n)
  msra                N(0, sqrt(2 / n))
  bilinear            the bilinear-upsampling kernel, for Deconvolution
where n is fan_in = count / shape[0] (the default), fan_out = count / shape[1], or their average
(variance_norm FAN_IN / FAN_OUT / AVERAGE), exactly as Caffe computes them.
"""
import math

import torch

from ..errors import BrewnetError


def _fans(blob):
    count = blob.count()
    if blob.num_axes < 1 or blob.shape[0] == 0:
        raise BrewnetError(f"filler: blob '{blob.name}' of shape {blob.shape} has no fan-in")
    fan_in = count / blob.shape[0]
    # Caffe: fan_out = count / channels; a blob with fewer than 2 axes has LegacyShape(1) == 1.
    fan_out = count / (blob.shape[1] if blob.num_axes > 1 else 1)
    return fan_in, fan_out


def _fan(param, blob):
    fan_in, fan_out = _fans(blob)
    norm = param.variance_norm
    if norm == param.FAN_OUT:
        return fan_out
    if norm == param.AVERAGE:
        return (fan_in + fan_out) / 2.0
    return fan_in


def fill(param, blob):
    """Fill `blob.data` in place according to the FillerParameter `param`.  The random fillers draw from the
    host's generator on every device, as Caffe's do (they fill the CPU copy, which then syncs to the GPU): the
    same random_seed gives the same initial weights in CPU and GPU mode."""
    data = blob.data
    if data.device.type == "cpu":
        _fill(param, data, blob)
    else:
        host = torch.empty(data.shape, dtype=data.dtype)
        _fill(param, host, blob)
        data.copy_(host)
    return blob


def _fill(param, data, blob):
    kind = param.type
    if kind == "constant":
        data.fill_(param.value)
    elif kind == "uniform":
        data.uniform_(param.min, param.max)
    elif kind == "gaussian":
        data.normal_(param.mean, param.std)
        if param.sparse >= 0:
            if blob.num_axes < 1:
                raise BrewnetError(f"gaussian filler with sparse: blob '{blob.name}' needs at least one axis")
            num_outputs = blob.shape[0]
            keep = param.sparse / num_outputs
            data.mul_(torch.bernoulli(torch.full_like(data, keep)))
    elif kind == "positive_unitball":
        data.uniform_(0.0, 1.0)
        rows = data.view(blob.shape[0], -1)
        rows.div_(rows.sum(dim=1, keepdim=True))
    elif kind == "xavier":
        scale = math.sqrt(3.0 / _fan(param, blob))
        data.uniform_(-scale, scale)
    elif kind == "msra":
        data.normal_(0.0, math.sqrt(2.0 / _fan(param, blob)))
    elif kind == "bilinear":
        _bilinear(data, blob)
    else:
        raise BrewnetError(f"unknown filler type '{kind}' for blob '{blob.name}' "
                           "(known: constant, uniform, gaussian, positive_unitball, xavier, msra, bilinear)")


def _bilinear(data, blob):
    if blob.num_axes != 4 or blob.shape[2] != blob.shape[3]:
        raise BrewnetError(f"bilinear filler needs a 4-D blob with square kernels; '{blob.name}' has "
                           f"shape {blob.shape}")
    k = blob.shape[3]
    f = math.ceil(k / 2.0)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    axis = torch.arange(k, dtype=torch.float64)
    profile = 1 - (axis / f - c).abs()
    kernel = profile[:, None] * profile[None, :]
    data.copy_(kernel.to(data.dtype).expand(blob.shape))
