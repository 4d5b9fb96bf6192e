"""Records the Kindling source tree this package is built from, so an
installed copy still finds <repo>/build/libkindling.so and <repo>/build/kindling
(see kindling_spark/native.py). Everything else is in pyproject.toml."""
import pathlib

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent


class build_py_with_info(build_py):
    def run(self):
        super().run()
        # Only a real Kindling tree is recorded; pip may build from a copy.
        root = str(REPO) if (REPO / "include" / "kindling.h").is_file() else None
        out = pathlib.Path(self.build_lib) / "kindling_spark" / "_build_info.py"
        out.write_text(f'"""Written by setup.py at build time."""\nREPO_ROOT = {root!r}\n')


setup(cmdclass={"build_py": build_py_with_info})
