"""Snapshot files: atomic writes, the HDF5 solverstate layout, and brewnet's exact-resume side file.

A snapshot at iteration N with prefix P is, as in Caffe,

    BINARYPROTO   P_iter_N.caffemodel      + P_iter_N.solverstate      (SolverState: iter, learned_net,
    HDF5          P_iter_N.caffemodel.h5   + P_iter_N.solverstate.h5    current_step, history)

and brewnet adds `<solverstate>.brewnet` next to the solverstate: what Caffe's resume forgets (book 5.1.3) — the
random generators (torch, NumPy, Python) and the position of every stateful layer (data cursors, shuffling
generators).  Caffe's readers never look at it, so the solverstate stays Caffe's own format.

Every file is written to a temporary name in the same folder, flushed to disk, then renamed, and the solverstate
is written last: a solverstate that exists is complete and so is everything it refers to, even when the process
is killed in the middle of a snapshot.  What such a kill leaves behind — `<file>.tmp<pid>` files and a
weights file (and side file) without their solverstate — is cleaned up or reported by `tidy_snapshots` when
training starts again with the same prefix.

Side-file format (no pickle): a ZIP archive (the .npz container) holding `state.json` and one `.npy` member per
array.  Layers take part through an optional protocol:

    layer.state_dict()       -> dict of str -> JSON value (int, float, str, bool, None, list, dict)
                                             or array (numpy.ndarray / torch.Tensor)
    layer.load_state_dict(d)    the same dict back (arrays as numpy.ndarray)

A layer with a prefetch thread must report the position of the next batch the net will *consume* (not the
next one its thread will read) and, in load_state_dict, drop what it already prefetched.
"""
import contextlib
import io
import json
import os
import random
import re
import time
import zipfile

import h5py
import numpy as np
import torch

from ..errors import SolverError
from ..proto import caffe_pb2

SIDE_SUFFIX = ".brewnet"
SIDE_FORMAT = "brewnet-exact-resume"
SIDE_VERSION = 1


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to `path`; on success fsync it and rename it over `path`."""
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path)


def _fsync_dir(path):
    """Make the rename itself durable (best effort: not every platform can open a directory)."""
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --- what a killed run leaves behind ----------------------------------------------------------------------------
# A temporary file younger than this may belong to a live writer on another machine sharing the folder (its pid
# means nothing here); one that old and whose pid does not run here is a killed writer's.
TMP_GRACE_SECONDS = 60
_TMP = re.compile(r"^(?P<target>.*?)(?P<pids>(?:\.tmp\d+)+)$")
_MODEL, _STATE = {".solverstate": ".caffemodel", ".solverstate.h5": ".caffemodel.h5"}, (".solverstate",
                                                                                       ".solverstate.h5")


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:     # another user's live process
        return True
    return True


def _snapshot_files(prefix):
    """The files whose names start with `<prefix>_iter_` (paths), in name order."""
    folder, base = os.path.split(os.fspath(prefix))
    try:
        names = os.listdir(folder or ".")
    except OSError:
        return []
    return [os.path.join(folder, n) for n in sorted(names) if n.startswith(base + "_iter_")]


def remove_orphan_tmp_files(prefix, now=None):
    """Delete `<prefix>_iter_*.tmp<pid>` files left by atomic writes of processes that no longer run; returns
    the deleted paths."""
    now = time.time() if now is None else now
    removed = []
    for path in _snapshot_files(prefix):
        match = _TMP.match(path)
        if match is None:
            continue
        pids = [int(p) for p in match.group("pids").split(".tmp")[1:]]
        try:
            if any(_pid_alive(pid) for pid in pids) or now - os.path.getmtime(path) < TMP_GRACE_SECONDS:
                continue
            os.unlink(path)
        except FileNotFoundError:       # removed meanwhile (its writer finished, or another rank tidied)
            continue
        removed.append(path)
    return removed


def incomplete_snapshots(prefix):
    """[(solverstate path that is missing, [files of its snapshot that exist])]: the weights or side file of a
    snapshot whose solverstate (written last) never appeared, as a kill between the files leaves."""
    files = set(p for p in _snapshot_files(prefix) if _TMP.match(p) is None)
    found = []
    for state_suffix, model_suffix in _MODEL.items():
        stems = {p[:-len(model_suffix)] for p in files if p.endswith(model_suffix)}
        stems |= {p[:-len(state_suffix + SIDE_SUFFIX)] for p in files if p.endswith(state_suffix + SIDE_SUFFIX)}
        for stem in sorted(stems):
            state = stem + state_suffix
            if state not in files:
                present = [p for p in (stem + model_suffix, side_file(state)) if p in files]
                found.append((state, present))
    return found


def tidy_snapshots(prefix, log):
    """At the start of training: remove dead writers' temporary files and warn about incomplete snapshots."""
    for path in remove_orphan_tmp_files(prefix):
        log.info("Removed %s, left by an interrupted snapshot", path)
    for state, present in incomplete_snapshots(prefix):
        log.warning("Incomplete snapshot: %s without %s (a run killed while snapshotting); it cannot be resumed "
                    "from%s", " and ".join(present), state,
                    ", its weights can finetune (-weights)" if not present[0].endswith(SIDE_SUFFIX) else "")


def current_state_file(solver):
    """The solverstate a snapshot of the solver's current iteration writes (or wrote)."""
    hdf5 = solver.param.snapshot_format == caffe_pb2.SolverParameter.HDF5
    return solver.snapshot_filename(".solverstate.h5" if hdf5 else ".solverstate")


def missing_state_error(state_file):
    """The SolverError for a solverstate that does not exist, naming what of its snapshot does."""
    state_file = os.fspath(state_file)
    message = f"solver state file not found: {state_file}"
    suffix = next((s for s in _STATE if state_file.endswith(s)), None)
    if suffix is not None:
        stem = state_file[:-len(suffix)]
        present = [p for p in (stem + _MODEL[suffix], side_file(state_file)) if os.path.exists(p)]
        if present:
            message += (f" ({' and '.join(present)} {'is' if len(present) == 1 else 'are'} there without it: "
                        "the snapshot is incomplete, its run was killed while writing it; resume from an "
                        "earlier snapshot)")
    return SolverError(message)


# --- HDF5 solverstate (Caffe's SnapshotSolverStateToHDF5 layout) ----------------------------------------------
def write_hdf5_state(path, it, learned_net, current_step, history):
    """history: list of numpy arrays, stored as datasets history/0, history/1, ..."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("iter", data=np.array([it], dtype=np.int32))
            # H5LTmake_dataset_string: a scalar fixed-length C string, NUL included.
            raw = learned_net.encode("utf-8") + b"\0"
            f.create_dataset("learned_net", data=np.array(raw, dtype=f"S{len(raw)}"))
            f.create_dataset("current_step", data=np.array([current_step], dtype=np.int32))
            group = f.create_group("history")
            for i, array in enumerate(history):
                group.create_dataset(str(i), data=array)


def read_hdf5_state(path):
    """Return (iter, learned_net or None, current_step, [history arrays in index order])."""
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise SolverError(f"{path}: cannot open the HDF5 solver state: {e}") from None
    with f:
        for key in ("iter", "current_step", "history"):
            if key not in f:
                raise SolverError(f"{path}: not a solver state: the HDF5 file has no '{key}'")
        it = int(np.asarray(f["iter"][()]).ravel()[0])
        current_step = int(np.asarray(f["current_step"][()]).ravel()[0])
        learned_net = None
        if "learned_net" in f:
            value = f["learned_net"][()]
            if isinstance(value, np.ndarray):
                value = value.ravel()[0]
            learned_net = (value.decode("utf-8") if isinstance(value, bytes) else str(value)).rstrip("\0")
        group = f["history"]
        history = []
        for i in range(len(group)):
            if str(i) not in group:
                raise SolverError(f"{path}: history/{i} is missing (history has {len(group)} entries)")
            history.append(np.asarray(group[str(i)][()]))
    return it, learned_net, current_step, history


# --- the exact-resume side file -------------------------------------------------------------------------------
def side_file(state_path):
    return os.fspath(state_path) + SIDE_SUFFIX


def capture_rng():
    """The state of every generator brewnet draws from, as (json part, {name: array})."""
    arrays = {"rng/torch_cpu": torch.get_rng_state().numpy().copy()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            arrays[f"rng/torch_cuda/{i}"] = state.numpy().copy()
    algorithm, keys, pos, has_gauss, cached = np.random.get_state()
    arrays["rng/numpy_keys"] = np.asarray(keys, dtype=np.uint32)
    version, internal, gauss_next = random.getstate()
    arrays["rng/python"] = np.asarray(internal, dtype=np.uint64)
    meta = {"numpy": {"algorithm": algorithm, "pos": int(pos), "has_gauss": int(has_gauss),
                      "cached_gaussian": float(cached)},
            "python": {"version": version, "gauss_next": gauss_next}}
    return meta, arrays


def restore_rng(meta, arrays):
    torch.set_rng_state(torch.from_numpy(arrays["rng/torch_cpu"].copy()))
    cuda = sorted(k for k in arrays if k.startswith("rng/torch_cuda/"))
    if cuda and torch.cuda.is_available():
        states = [torch.from_numpy(arrays[f"rng/torch_cuda/{i}"].copy()) for i in range(len(cuda))]
        torch.cuda.set_rng_state_all(states[:torch.cuda.device_count()])
    n = meta["numpy"]
    np.random.set_state((n["algorithm"], arrays["rng/numpy_keys"], n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = meta["python"]
    random.setstate((p["version"], tuple(int(x) for x in arrays["rng/python"]), p["gauss_next"]))


def _split_state(prefix, state, arrays):
    """Move the arrays of a layer's state_dict into `arrays`; return the JSON remainder."""
    out = {}
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        if isinstance(value, np.ndarray):
            arrays[f"{prefix}/{key}"] = value
            out[key] = {"__array__": f"{prefix}/{key}"}
        elif isinstance(value, dict):
            out[key] = _split_state(f"{prefix}/{key}", value, arrays)
        elif isinstance(value, np.generic):
            out[key] = value.item()
        else:
            out[key] = value
    return out


def _join_state(state, arrays):
    out = {}
    for key, value in state.items():
        if isinstance(value, dict) and set(value) == {"__array__"}:
            out[key] = arrays[value["__array__"]]
        elif isinstance(value, dict):
            out[key] = _join_state(value, arrays)
        else:
            out[key] = value
    return out


def net_states(nets):
    """{net tag: {layer name: state_dict}} for every layer that implements the protocol."""
    states = {}
    for tag, net in nets:
        layers = {}
        for name, layer in zip(net.layer_names, net.layers):
            get = getattr(layer, "state_dict", None)
            if callable(get):
                layers[name] = get()
        states[tag] = layers
    return states


def write_side_file(path, it, nets):
    """Write the exact-resume record for iteration `it` (nets: [(tag, Net)])."""
    rng_meta, arrays = capture_rng()
    layers = {}
    for tag, per_layer in net_states(nets).items():
        layers[tag] = {name: _split_state(f"layers/{tag}/{name}", state, arrays)
                       for name, state in per_layer.items()}
    meta = {"format": SIDE_FORMAT, "version": SIDE_VERSION, "iter": int(it), "rng": rng_meta, "layers": layers}
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as z:
            z.writestr("state.json", json.dumps(meta, indent=1, sort_keys=True))
            for key, array in arrays.items():
                buffer = io.BytesIO()
                np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
                z.writestr(key + ".npy", buffer.getvalue())


def read_side_file(path):
    """Return (meta, arrays) from a side file; a damaged file is a SolverError naming it."""
    try:
        with zipfile.ZipFile(path) as z:
            meta = json.loads(z.read("state.json").decode("utf-8"))
            arrays = {}
            for name in z.namelist():
                if name.endswith(".npy"):
                    arrays[name[:-4]] = np.lib.format.read_array(io.BytesIO(z.read(name)), allow_pickle=False)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise SolverError(f"{path}: cannot read the exact-resume state: {e}") from None
    if meta.get("format") != SIDE_FORMAT:
        raise SolverError(f"{path}: not a brewnet exact-resume file (format {meta.get('format')!r})")
    return meta, arrays


def load_side_file(path, nets, expected_iter, log):
    """Restore RNGs and layer positions from `path` into `nets` ([(tag, Net)]). Returns True when applied."""
    meta, arrays = read_side_file(path)
    if meta["iter"] != expected_iter:
        log.warning("Ignoring %s: it records iteration %d, the solver state iteration %d", path, meta["iter"],
                    expected_iter)
        return False
    restore_rng(meta["rng"], arrays)
    saved = meta.get("layers", {})
    for tag, net in nets:
        for name, state in saved.get(tag, {}).items():
            if not net.has_layer(name):
                log.warning("%s: layer '%s' of %s is not in the net; its position is not restored", path,
                            name, tag)
                continue
            layer = net.layer_by_name(name)
            load = getattr(layer, "load_state_dict", None)
            if not callable(load):
                log.warning("%s: layer '%s' cannot load its saved position (no load_state_dict)", path, name)
                continue
            load(_join_state(state, arrays))
    log.info("Restored data positions and random generators from %s", path)
    return True
