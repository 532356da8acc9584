"""Command-line tools: `caffe`/`brewnet` and converters, one module per tool."""
