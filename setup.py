"""The ddl._C extension. Metadata lives in pyproject.toml; this file only builds C/C++.

C sources are compiled as C11, the Gloo shim (csrc/comm/gloo/*.cc, csrc/store/redis.cc) as
C++17. DDL_CFLAGS adds flags (CI uses -Werror, and -fsanitize=... for the sanitizer build).

Before compiling, the build checks with its own compiler that Gloo and zlib compile and link
(a tiny program against each), and names the Debian package to install if not. The extension
finds libscipy_openblas at run time next to an installed ddl ($ORIGIN/../scipy_openblas32/lib,
its only RUNPATH: no build-folder paths); an in-place or editable build, whose $ORIGIN is the
source tree, has ddl/__init__.py load it from the installed scipy-openblas32 wheel instead.
"""
import glob
import os
import shlex
import tempfile

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

try:
    from setuptools.errors import CompileError, LinkError
except ImportError:  # setuptools < 59
    from distutils.errors import CompileError, LinkError

# (what, Debian package, program, libraries): each must compile and link with the build's compiler
PROBES = [
    ("Gloo", "libgloo-dev",
     ("#include <gloo/config.h>\n#include <gloo/transport/tcp/device.h>\n"
     "int main() { return gloo::transport::tcp::CreateDevice({}) ? 0 : 1; }\n"),
     ["gloo", "stdc++", "pthread"]),
    ("zlib", "zlib1g-dev",
     "#include <zlib.h>\nint main() { return zlibVersion()[0] == 0; }\n",
     ["z"]),
]


def _probe(compiler, what, package, program, libraries):
    """Compile and link `program`; SystemExit naming the package to install if that fails."""
    with tempfile.TemporaryDirectory(prefix="ddl-probe-") as tmp:
        src = os.path.join(tmp, "probe.cc")
        with open(src, "w") as f:
            f.write(program)
        try:
            objs = compiler.compile([src], output_dir=tmp, extra_postargs=["-std=c++17"])
            compiler.link_executable(objs, "probe", output_dir=tmp, libraries=libraries)
        except (CompileError, LinkError) as e:
            raise SystemExit(
                f"ddl needs {what}: a program using it does not compile or link with this "
                f"build's compiler ({e}).\n"
                f"Install the Debian package {package}: sudo apt-get install {package}   "
                "(or run `make setup`)") from None


def _openblas():
    try:
        import scipy_openblas32 as sob
    except ImportError:
        raise SystemExit(
            "ddl needs the scipy-openblas32 package at build time: pip install scipy-openblas32"
        ) from None
    return sob.get_include_dir(), sob.get_lib_dir(), sob.get_library()


class BuildExt(build_ext):
    """Probe the system libraries, then give each language its own flags (setuptools
    compiles all sources with one set)."""

    def build_extensions(self):
        compiler = self.compiler
        if "-Wstrict-prototypes" in compiler.compiler_so:
            compiler.compiler_so.remove("-Wstrict-prototypes")
        for probe in PROBES:  # before the flags below: DDL_CFLAGS may need its own link flags
            _probe(compiler, *probe)
        extra = shlex.split(os.environ.get("DDL_CFLAGS", ""))
        common = ["-O3", "-fno-math-errno", "-fno-strict-aliasing", "-Wall", "-Wextra",
                  "-fvisibility=hidden"]
        cflags = common + ["-std=c11", "-D_GNU_SOURCE"] + extra
        cxxflags = common + ["-std=c++17"] + extra
        original = compiler._compile

        def _compile(obj, src, ext, cc_args, extra_postargs, pp_opts):
            flags = cxxflags if src.endswith(".cc") else cflags
            original(obj, src, ext, cc_args, list(extra_postargs) + flags, pp_opts)

        compiler._compile = _compile
        for e in self.extensions:
            e.extra_link_args += [a for a in extra if a.startswith("-fsanitize")]
        super().build_extensions()


blas_inc, blas_lib, blas_name = _openblas()

sources = sorted(glob.glob("csrc/**/*.c", recursive=True)
                 + glob.glob("csrc/**/*.cc", recursive=True))

setup(
    ext_modules=[
        Extension(
            "ddl._C",
            sources=sources,
            include_dirs=["csrc/include", "csrc", blas_inc],
            library_dirs=[blas_lib],
            libraries=[blas_name, "gloo", "z", "stdc++", "m"],
            # next to an installed ddl only: blas_lib may be pip's deleted build-isolation
            # folder (ddl/__init__.py covers in-place and editable builds)
            runtime_library_dirs=["$ORIGIN/../scipy_openblas32/lib"],
            depends=sorted(glob.glob("csrc/**/*.h", recursive=True)),
        )
    ],
    cmdclass={"build_ext": BuildExt},
)
