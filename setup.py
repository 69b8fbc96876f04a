"""The ddl._C extension. Metadata lives in pyproject.toml; this file only builds C/C++.

C sources are compiled as C11, the Gloo shim (csrc/comm/gloo/*.cc, csrc/store/redis.cc) as C++17. DDL_CFLAGS
adds flags (CI uses -Werror, and -fsanitize=... for the sanitizer build).
"""
import glob
import os
import shlex

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def _require(path, package):
    if not glob.glob(path):
        raise SystemExit(
            f"ddl needs the Debian package {package} (missing {path}).\n"
            f"Install it with: sudo apt-get install {package}   (or run `make setup`)"
        )


def _openblas():
    try:
        import scipy_openblas32 as sob
    except ImportError:
        raise SystemExit(
            "ddl needs the scipy-openblas32 package at build time: pip install scipy-openblas32"
        )
    return sob.get_include_dir(), sob.get_lib_dir(), sob.get_library()


class BuildExt(build_ext):
    """Give each language its own flags (setuptools compiles all sources with one set)."""

    def build_extensions(self):
        extra = shlex.split(os.environ.get("DDL_CFLAGS", ""))
        common = ["-O3", "-fno-math-errno", "-fno-strict-aliasing", "-Wall", "-Wextra", "-fvisibility=hidden"]
        cflags = common + ["-std=c11", "-D_GNU_SOURCE"] + extra
        cxxflags = common + ["-std=c++17"] + extra
        compiler = self.compiler
        if "-Wstrict-prototypes" in compiler.compiler_so:
            compiler.compiler_so.remove("-Wstrict-prototypes")
        original = compiler._compile

        def _compile(obj, src, ext, cc_args, extra_postargs, pp_opts):
            flags = cxxflags if src.endswith(".cc") else cflags
            original(obj, src, ext, cc_args, list(extra_postargs) + flags, pp_opts)

        compiler._compile = _compile
        for e in self.extensions:
            e.extra_link_args += [a for a in extra if a.startswith("-fsanitize")]
        super().build_extensions()


_require("/usr/include/gloo/config.h", "libgloo-dev")
_require("/usr/lib/libgloo.so*", "libgloo-dev")
_require("/usr/include/zlib.h", "zlib1g-dev")
blas_inc, blas_lib, blas_name = _openblas()

sources = sorted(glob.glob("csrc/**/*.c", recursive=True) + glob.glob("csrc/**/*.cc", recursive=True))

setup(
    ext_modules=[
        Extension(
            "ddl._C",
            sources=sources,
            include_dirs=["csrc/include", "csrc", blas_inc],
            library_dirs=[blas_lib],
            libraries=[blas_name, "gloo", "z", "stdc++", "m"],
            # found next to an installed ddl, or where the build found it (editable installs);
            # ddl/__init__.py also preloads it from the installed wheel.
            runtime_library_dirs=["$ORIGIN/../scipy_openblas32/lib", blas_lib],
            depends=sorted(glob.glob("csrc/**/*.h", recursive=True)),
        )
    ],
    cmdclass={"build_ext": BuildExt},
)
