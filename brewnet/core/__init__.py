"""Caffe's core: Blob, Layer, LayerRegistry, Net, fillers and the gradient checker."""
