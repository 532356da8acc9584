"""FractalNet (Larsson et al. 2017) for small images, joined by DropPath layers (local and global drop-path).

    fractalnet(columns=3, widths=(16, 32, 64), num_output=10, drop_ratio=0.15, global_ratio=0.5, seed=0,
               test_column=-1, source=None, input_shape=None, batch_size=64, label=True, accuracy=True,
               backend="LMDB", transform_param=None, name=None) -> caffe_pb2.NetParameter

One fractal block per entry of widths, 2x2 max pooling `b<b>_pool` between blocks, global average pooling
`pool` after the last and the InnerProduct `score`. A block of C columns is the expansion
f_1(z) = conv(z), f_{C+1}(z) = join(f_C(f_C(z)), conv(z)), with consecutive joins merged as in the paper: a
join averages the outputs of all the columns that meet there (2^(C-2) joins per block for C >= 2). Column j (0-based) has 2^j convolutions,
`b<b>_c<j>_<k>` (k = 1..2^j), each 3x3 + BatchNorm + Scale + ReLU; the joins `b<b>_join<m>` are DropPath
layers whose `column` fields name each bottom's column, with num_columns = C, the given ratios and one seed
for the whole net (so a global draw keeps the same column in every join of every block). test_column >= 0
evaluates that column alone (the paper's single-column nets); -1 the whole fractal.

Learned values (parameter_count) of a block from c_in to c channels with C columns: C convolutions read the
block's input, 2^C - 1 - C read c channels:
    C (9 c_in c + 2c) + (2^C - 1 - C)(9 c² + 2c);      the head: c_last K + K.
"""
from ..pycaffe.net_spec import NetSpec, layers as L, params as P
from .common import ModelSpecError, add_head, add_inputs, conv_bn, finish


class _Block:
    """Names and join parameters while one fractal block is written."""

    def __init__(self, n, index, width, columns, drop_path_param):
        self.n, self.index, self.width, self.columns = n, index, width, columns
        self.drop_path_param = drop_path_param
        self.convs = {}                 # column -> convolutions written so far
        self.joins = 0

    def conv(self, z, column):
        self.convs[column] = self.convs.get(column, 0) + 1
        return conv_bn(self.n, f"b{self.index}_c{column}_{self.convs[column]}", z, self.width)

    def join(self, paths):
        """The DropPath join of [(column, top), ...]; a single path needs none."""
        if len(paths) == 1:
            return paths[0][1]
        self.joins += 1
        name = f"b{self.index}_join{self.joins}"
        param = dict(self.drop_path_param, column=[c for c, _ in paths])
        self.n[name] = L.DropPath(*[top for _, top in paths], drop_path_param=param)
        return self.n[name]

    def expand(self, z, count, first):
        """The unjoined outputs [(column, top)] of f_count on z, its columns numbered from `first`."""
        shallow = (first, self.conv(z, first))
        if count == 1:
            return [shallow]
        middle = self.join(self.expand(z, count - 1, first + 1))
        return [shallow] + self.expand(middle, count - 1, first + 1)


def fractalnet(columns=3, widths=(16, 32, 64), num_output=10, drop_ratio=0.15, global_ratio=0.5, seed=0,
               test_column=-1, source=None, input_shape=None, batch_size=64, label=True, accuracy=True,
               backend="LMDB", transform_param=None, name=None):
    """The NetParameter of a FractalNet (see the module's docstring)."""
    if columns < 1 or not widths or min(widths) < 1:
        raise ModelSpecError(f"Expect: columns >= 1 and positive widths, Actual: columns {columns}, "
                             f"widths {tuple(widths)}")
    if test_column >= columns:
        raise ModelSpecError(f"test_column {test_column} of a FractalNet with {columns} columns (0..{columns - 1})")
    n = NetSpec()
    top, target = add_inputs(n, source=source, input_shape=input_shape, batch_size=batch_size, label=label,
                             backend=backend, transform_param=transform_param)
    drop_path_param = dict(drop_ratio=drop_ratio, global_ratio=global_ratio, num_columns=columns, seed=seed,
                           test_column=test_column)
    for index, width in enumerate(widths, 1):
        block = _Block(n, index, width, columns, drop_path_param)
        top = block.join(block.expand(top, columns, 0))
        if index < len(widths):
            n[f"b{index}_pool"] = L.Pooling(top, pool=P.Pooling.MAX, kernel_size=2, stride=2)
            top = n[f"b{index}_pool"]
    n.pool = L.Pooling(top, pool=P.Pooling.AVE, global_pooling=True)
    add_head(n, n.pool, target, num_output, accuracy=accuracy)
    return finish(n, name or f"FractalNet-C{columns}B{len(widths)}")
