"""Python: a layer written by the user in Python (Caffe's PythonLayer, `python_param { module layer param_str }`).

The net imports `module` (from sys.path, which includes PYTHONPATH), instantiates its class `layer` with the
LayerParameter, and from then on forwards every hook to it:

    setup(bottom, top)                      once, after `param_str` and `phase` are set on the instance
    reshape(bottom, top)                    before every forward
    forward(bottom, top)
    backward(top, propagate_down, bottom)

as in pycaffe, `bottom` / `top` are lists of blob views whose `.data` / `.diff` are NumPy arrays sharing the
blobs' memory (see brewnet.pycaffe.blob), and `self.blobs` lists the layer's parameter blobs, grown with
`self.blobs.add_blob(*shape)`.  User classes derive from `PythonLayerBase` (what `caffe.Layer` names).
A `loss_weight` works as on any layer: the weight sits in the top's diff for the user's backward to read.
`share_in_parallel` is deprecated in Caffe and accepted without effect here.

A user class that keeps a position or a generator of its own (a data layer in Python) takes part in the
solver's exact resume by defining `state_dict()` and `load_state_dict(d)` (brewnet.solvers.snapshot): the
layer has these methods exactly when the user's class does.

Anything the user's code raises (on import, in __init__, in a hook) reaches the caller as itself, so that a
script catches the types it raised, as with Caffe; brewnet adds a note naming the layer, the class and the hook
(BaseException.add_note: printed under the traceback, listed in `error.__notes__`).  A module that cannot be
found is an ImportError, a class missing from it an AttributeError, as pycaffe's import would raise; both are
brewnet LayerErrors naming the search path or the classes the module has.
"""
import importlib
import sys

from ..core.layer import Layer
from ..runtime.precision import lowered
from ..pycaffe.blob import PyBlob, PyBlobVec
from ..core.registry import register_layer
from ..errors import LayerError
from ..proto import caffe_pb2


class PythonLayerBase:
    """Base class of user-written Python layers (pycaffe's `caffe.Layer`).

    Attributes set by brewnet: `param_str` (python_param.param_str), `phase` (caffe_pb2.TRAIN / TEST),
    `blobs` (the parameter blobs, with `add_blob(*shape)`), `layer_param` (the LayerParameter)."""
    type = "Python"

    def __init__(self, param=None):
        self.layer_param = param
        self.param_str = param.python_param.param_str if param is not None else ""
        self.phase = param.phase if param is not None else caffe_pb2.TRAIN
        self.blobs = PyBlobVec([])

    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        raise NotImplementedError(f"{type(self).__name__} must implement reshape(bottom, top)")

    def forward(self, bottom, top):
        raise NotImplementedError(f"{type(self).__name__} must implement forward(bottom, top)")

    def backward(self, top, propagate_down, bottom):
        raise NotImplementedError(f"{type(self).__name__} must implement backward(top, propagate_down, bottom)")


class PythonLayerImportError(LayerError, ImportError):
    """The module of a Python layer is not on the search path."""


class PythonLayerClassError(LayerError, AttributeError):
    """The module of a Python layer has no such class, or it is not a class."""


def add_note(error, note):
    """error.add_note(note) (Python 3.11+); on 3.10 the note is kept in __notes__ all the same."""
    if hasattr(error, "add_note"):
        error.add_note(note)
    else:
        error.__notes__ = list(getattr(error, "__notes__", ())) + [note]


@register_layer("Python")
class PythonLayer(Layer):
    not_recordable = "its Python code runs on the host every iteration"
    def __init__(self, param):
        self.impl = None
        super().__init__(param)
        python_param = param.python_param
        self.module_name, self.class_name = python_param.module, python_param.layer
        self.expect(self.module_name and self.class_name,
                    f"Expect: python_param with module and layer, Actual: module '{self.module_name}', "
                    f"layer '{self.class_name}'")
        self.qualified_name = f"{self.module_name}.{self.class_name}"
        cls = self._load_class()
        try:
            impl = cls(param)
        except Exception as error:
            self._raise(error, "__init__")
        impl.param_str = python_param.param_str
        impl.phase = self.phase
        impl.blobs = PyBlobVec(self.blobs, name_prefix=self.name)
        self.impl = impl

    # The parameter blobs live in this layer's list (the Net shares and saves them); the user's instance
    # sees the same list through a PyBlobVec, rebound if the list itself is replaced.
    @property
    def blobs(self):
        return self._blobs

    @blobs.setter
    def blobs(self, value):
        self._blobs = value
        if self.impl is not None:
            self.impl.blobs = PyBlobVec(value, name_prefix=self.name)

    def _load_class(self):
        module = self._import()
        cls = getattr(module, self.class_name, None)
        if cls is None:
            known = sorted(n for n, v in vars(module).items()
                           if isinstance(v, type) and hasattr(v, "forward") and v is not PythonLayerBase)
            raise PythonLayerClassError(
                f"Python layer class '{self.class_name}' not found in module '{self.module_name}' "
                f"({getattr(module, '__file__', '?')}); layer classes there: {', '.join(known) or 'none'}",
                self.name, self.type)
        if not callable(cls):
            raise PythonLayerClassError(f"'{self.qualified_name}' is not a class", self.name, self.type)
        return cls

    def _import(self):
        try:
            return importlib.import_module(self.module_name)
        except ModuleNotFoundError as error:
            missing = error.name or ""
            if self.module_name == missing or self.module_name.startswith(missing + "."):
                # A file created since the last import attempt may hide behind the finders' caches.
                importlib.invalidate_caches()
                try:
                    return importlib.import_module(self.module_name)
                except ModuleNotFoundError:
                    pass
                raise PythonLayerImportError(
                    f"cannot import Python layer module '{self.module_name}': not found on the search path "
                    f"(sys.path, which includes PYTHONPATH): {sys.path}", self.name, self.type) from error
            self._raise(error, "import")
        except Exception as error:
            self._raise(error, "import")

    def _raise(self, error, hook):
        """Re-raise the user's own exception, with a note saying where brewnet called the user's code."""
        where = (f"importing module '{self.module_name}'" if hook == "import"
                 else f"{self.qualified_name}.{hook}")
        add_note(error, f"brewnet: raised by {where} in layer '{self.name}' (type Python)")
        raise error

    # --- exact resume: present only when the user's class defines them (the snapshot looks them up) ----------
    @property
    def state_dict(self):
        return self._user_method("state_dict")

    @property
    def load_state_dict(self):
        return self._user_method("load_state_dict")

    def _user_method(self, hook):
        method = getattr(self.impl, hook, None)
        if not callable(method):
            raise AttributeError(f"Python layer class '{self.qualified_name}' has no method '{hook}'")

        def call(*args):
            try:
                return method(*args)
            except Exception as error:
                self._raise(error, hook)
        return call

    def _call(self, hook, *args, views=()):
        method = getattr(self.impl, hook, None)
        if method is None:
            raise LayerError(f"Python layer class '{self.qualified_name}' has no method '{hook}'",
                             self.name, self.type)
        try:
            method(*args)
        except Exception as error:
            self._raise(error, hook)
        finally:
            # Host copies of non-CPU blobs go back to the device (no-op on CPU).
            for view in views:
                view.flush()
            flush_params = getattr(self.impl.blobs, "flush", None)
            if flush_params is not None:
                flush_params()

    # --- hooks ---------------------------------------------------------------------------------------------
    def layer_setup(self, bottom, top):
        # Caffe sets these right before calling setup.
        self.impl.param_str = self.param.python_param.param_str
        self.impl.phase = self.phase
        b, t = [PyBlob(x) for x in bottom], [PyBlob(x) for x in top]
        self._call("setup", b, t, views=b + t)

    def reshape(self, bottom, top):
        b, t = [PyBlob(x) for x in bottom], [PyBlob(x) for x in top]
        self._call("reshape", b, t, views=b + t)

    @lowered
    def forward(self, bottom, top):
        b, t = [PyBlob(x) for x in bottom], [PyBlob(x) for x in top]
        self._call("forward", b, t, views=b + t)

    @lowered
    def backward(self, top, propagate_down, bottom):
        b, t = [PyBlob(x) for x in bottom], [PyBlob(x) for x in top]
        self._call("backward", t, list(propagate_down), b, views=b + t)
