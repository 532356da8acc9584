"""Says what to do when a BVLC Caffe checkout hides brewnet's `caffe` package.

A Caffe installation puts its python/ folder on PYTHONPATH (or a script runs from inside that folder), and
Python's path finder then finds Caffe's own python/caffe/__init__.py before brewnet's `caffe`.  That package
imports its compiled extension caffe._caffe, which a machine with brewnet does not have, and the script
stops with nothing more than "No module named 'caffe._caffe'".

The file brewnet-caffe-check.pth (installed next to this module in site-packages) runs `install()` when Python
starts: it appends a finder to sys.meta_path that is asked only after every other finder failed, and only
answers for caffe._caffe, by raising the same ModuleNotFoundError with the folder at fault and the way out.
It imports nothing else and costs nothing until that import fails.  This module is deliberately outside the
brewnet package, whose import would load torch at every interpreter start.

    python -m _brewnet_caffe_check install    # write the .pth into this interpreter's site-packages
                                              # (an editable install does not; `make venv` runs this)
"""
import os
import sys

PTH_NAME = "brewnet-caffe-check.pth"
PTH_LINE = "import _brewnet_caffe_check; _brewnet_caffe_check.install()\n"


def shadow_message(caffe_file):
    """The error text for a `caffe` package at caffe_file that is not brewnet's."""
    package = os.path.dirname(os.path.abspath(caffe_file))
    folder = os.path.dirname(package)
    on_pythonpath = any(os.path.abspath(p) == folder for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                        if p)
    if on_pythonpath:
        why, fix = "it is on PYTHONPATH", f"remove {folder} from PYTHONPATH"
    else:
        why = "it is the folder of the script being run (or was put on sys.path)"
        fix = "run the script from a copy outside that folder (Caffe's train.py, classify.py, ... run unchanged)"
    return (f"No module named 'caffe._caffe': `import caffe` found BVLC Caffe's own Python package at "
            f"{package} instead of brewnet's, because {folder} comes first on sys.path: {why}.  That package "
            f"needs Caffe's compiled extension, which brewnet replaces.  To use brewnet, {fix}; brewnet's "
            f"`caffe` provides Net, SGDSolver, io, draw, coord_map, NCCL and the rest itself.")


class ShadowedCaffeFinder:
    """The last finder on sys.meta_path: explains a missing caffe._caffe."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name != "caffe._caffe":
            return None
        caffe = sys.modules.get("caffe")
        caffe_file = getattr(caffe, "__file__", None)
        if caffe_file is None:
            return None
        raise ModuleNotFoundError(shadow_message(caffe_file), name=name)


def install():
    if not any(finder is ShadowedCaffeFinder for finder in sys.meta_path):
        sys.meta_path.append(ShadowedCaffeFinder)


def install_pth(site_packages=None):
    """Write brewnet-caffe-check.pth into site_packages (default: this interpreter's purelib)."""
    import sysconfig
    folder = site_packages or sysconfig.get_paths()["purelib"]
    path = os.path.join(folder, PTH_NAME)
    with open(path, "w", encoding="utf-8") as f:
        f.write(PTH_LINE)
    return path


if __name__ == "__main__":
    if sys.argv[1:] != ["install"]:
        sys.exit(f"usage: {sys.executable} -m _brewnet_caffe_check install")
    print(f"wrote {install_pth()}")
