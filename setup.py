"""Build hook: install ``passnet_gadgetron_hardening.pth`` beside the packages.

The ``.pth`` makes every interpreter run :mod:`gadgets.gadgetron_hook`, which acts only in
``python -m gadgetron PORT gadgets.passnet_gadget``: gadgetron reads the step configuration
and header there before any PASSNet code is imported, so nothing later can harden that read
(docs/gadgetron.md).
Metadata stays in ``pyproject.toml``; regular and editable installs both get the file.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

PTH = "passnet_gadgetron_hardening.pth"
HERE = Path(__file__).resolve().parent


class BuildPyWithPth(build_py):
    def run(self):
        super().run()
        shutil.copyfile(HERE / PTH, Path(self.build_lib) / PTH)

    def get_outputs(self, include_bytecode=True):
        return [*super().get_outputs(include_bytecode), str(Path(self.build_lib) / PTH)]


class EditableWheelWithPth(editable_wheel):
    def _install_namespaces(self, installation_dir, pth_prefix):
        super()._install_namespaces(installation_dir, pth_prefix)
        shutil.copyfile(HERE / PTH, Path(installation_dir) / PTH)


setup(cmdclass={"build_py": BuildPyWithPth, "editable_wheel": EditableWheelWithPth})
