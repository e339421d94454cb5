"""Build the compiled parts: Cython turns each .pyx into C, setuptools compiles it.

Metadata lives in pyproject.toml; this file only declares the extensions.
KVFAST_SANITIZE=1 builds them with AddressSanitizer and UndefinedBehaviorSanitizer.
"""
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

compile_args = ["-O2"]
link_args = []
if os.environ.get("KVFAST_SANITIZE") == "1":
    sanitizers = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=all"]
    compile_args = ["-O1", "-g", "-DKVFAST_DEBUG", *sanitizers]     # KVFAST_ASSERT checks on too
    link_args = sanitizers

extensions = [
    Extension(f"kvfast.{name}", [f"kvfast/{name}.pyx"],
              extra_compile_args=compile_args, extra_link_args=link_args)
    for name in ("_text", "_store", "_record", "_replay", "_aof", "_rewrite", "_stats", "_commandstats", "_metrics",
                 "_clients", "_multi", "_expire", "_evict", "_native", "_strings", "_keys", "_config_command", "_resp",
                 "_protocol", "_loop", "_bench", "_client")
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": 3, "boundscheck": False, "wraparound": False,
                             "cdivision": True},
    ),
)
