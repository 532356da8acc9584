"""The project is configured in pyproject.toml; this only adds brewnet-caffe-check.pth to the top of the wheel,
so that an installed brewnet explains a Caffe checkout that hides it (see _brewnet_caffe_check.py)."""
import os

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "brewnet-caffe-check.pth"


class BuildPyWithPth(build_py):
    def run(self):
        super().run()
        self.copy_file(PTH, os.path.join(self.build_lib, PTH), preserve_mode=False)

    def get_outputs(self, include_bytecode=True):
        return super().get_outputs(include_bytecode) + [os.path.join(self.build_lib, PTH)]


setup(cmdclass={"build_py": BuildPyWithPth})
