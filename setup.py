"""Build hook: compile bie's numba kernels into the wheel, so the first run after `pip install` is not a compile.

Everything else about the package is declared in pyproject.toml. See bie_cli/_precompile.py for why the
cache files stay valid once installed (numba keys them by source content, numba version and CPU), and why
they are harmless where they do not apply (numba ignores them and compiles as before).
"""

import os
import subprocess
import sys

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithNumbaCache(build_py):
    def run(self):
        super().run()
        if self.editable_mode or os.environ.get("BIE_SKIP_PRECOMPILE"):
            return  # an editable install runs from the source tree and fills its cache on first use
        # only this build's cache goes into the wheel, not one left in build/ or copied from a source tree
        for directory, _, files in os.walk(self.build_lib):
            for name in files:
                if name.endswith((".nbi", ".nbc")):
                    os.unlink(os.path.join(directory, name))
        env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_CACHE_DIR")}
        env.update(PYTHONPATH=os.path.abspath(self.build_lib), PYTHONDONTWRITEBYTECODE="1")
        # a subprocess: the kernels must be imported from build_lib, where their cache files land
        completed = subprocess.run([sys.executable, "-m", "bie_cli._precompile", "--quiet"], env=env, cwd=self.build_lib)
        if completed.returncode != 0:  # never fail an install over a cache: the first run compiles instead
            print("bie: could not precompile the numba kernels; the first run will compile them", file=sys.stderr)


setup(cmdclass={"build_py": BuildPyWithNumbaCache})
