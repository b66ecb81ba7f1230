"""Sessions: serve (default model built if missing), export, tests, lint, bench. Each installs what it needs."""

import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import nox

# The default model's id has one Python source, shared with the app and the pipeline (edge_contracts.py).
sys.path.insert(0, str(Path(__file__).parent))
from edge_contracts import DEFAULT_MODEL  # noqa: E402

nox.options.sessions = ["tests"]
nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True

ROOT = Path(__file__).parent
MODELS = ROOT / "models"
WEB = ROOT / "web"
# onnxruntime-node's postinstall downloads CUDA files (unreachable here); the web bundle needs none of it.
NPM_ENV = {"ONNXRUNTIME_NODE_INSTALL": "skip", "ONNXRUNTIME_NODE_INSTALL_CUDA": "skip"}


# The GGUF verifier's llama.cpp (llama-cpp-python; no Linux wheel on PyPI). Built from the sdist once per version and
# flags into build/llama-cpp/<key>/ and installed from there, never from pip's wheel cache: pip keys a built wheel by
# the sdist, not by CMAKE_ARGS, so a cache that once built llama.cpp with -march=native (AMX kernels that SIGILL on
# an Intel CPU with AMX) would hand that wheel back. Portable: GGML_NATIVE off, x86-64 at an AVX2 baseline
# (model_prep/llama_cpp_isa.py checks the installed library), aarch64 at the compiler's default; only the
# library the package loads, none of the tools, servers, examples, tests or the multimodal (llava/mtmd) library.
LLAMA_CPP = "llama-cpp-python==0.3.36"
LLAMA_CPP_TRIM = ("LLAVA_BUILD", "LLAMA_BUILD_TESTS", "LLAMA_BUILD_EXAMPLES", "LLAMA_BUILD_TOOLS", "LLAMA_BUILD_SERVER")
X86_64_BASELINE = ("GGML_AVX", "GGML_AVX2", "GGML_FMA", "GGML_F16C", "GGML_BMI2")
# llama-cpp-python forces llama.cpp's common library on (a FORCE'd cache entry); nothing the package loads links it,
# and it is about 40 % of the build's CPU time (docs/native-llama-cpp.md). CMake includes this right after llama.cpp's
# project() (CMAKE_PROJECT_<name>_INCLUDE), where a plain variable shadows the forced one.
LLAMA_CPP_SKIP_COMMON = "set(LLAMA_BUILD_COMMON OFF)\n"


def llama_cpp_cmake_args() -> str:
    """The portable flags; a user's CMAKE_ARGS (Metal, CUDA...) come after them, so theirs win."""
    flags = {"GGML_NATIVE": "OFF", **dict.fromkeys(LLAMA_CPP_TRIM, "OFF")}
    if platform.machine().lower() in ("x86_64", "amd64"):
        flags |= dict.fromkeys(X86_64_BASELINE, "ON")
    ours = " ".join(f"-D{name}={value}" for name, value in flags.items())
    return f"{ours} {os.environ.get('CMAKE_ARGS', '')}".strip()


def llama_cpp_build(session: nox.Session) -> Callable[[], Path]:
    """Starts building the portable wheel in the background when this platform and these flags have none (about
    3 min on 2 cores: pip and npm install meanwhile); returns the function that waits for it."""
    args = llama_cpp_cmake_args()
    built_from = f"{LLAMA_CPP} {sys.platform} {platform.machine()} {args} {LLAMA_CPP_SKIP_COMMON}"
    key = hashlib.sha256(built_from.encode()).hexdigest()[:16]
    folder = ROOT / "build" / "llama-cpp" / key
    if any(folder.glob("*.whl")):
        return lambda: next(folder.glob("*.whl"))
    partial, log = folder.with_name(key + ".part"), folder.with_name(key + ".log")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    skip_common = Path(tempfile.gettempdir()) / f"edge-chat-llama-cpp-{key}.cmake"  # CMAKE_ARGS splits on spaces
    skip_common.write_text(LLAMA_CPP_SKIP_COMMON)
    command = [str(Path(session.bin) / "python"), "-m", "pip", "wheel", "--no-deps", "--no-cache-dir"]
    command += ["--no-binary", "llama-cpp-python", "-w", str(partial), LLAMA_CPP]
    cmake_args = f"{args} -DCMAKE_PROJECT_llama.cpp_INCLUDE={skip_common}"
    env = {**os.environ, "CMAKE_ARGS": cmake_args, "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2)}
    session.log(f"building llama.cpp for the GGUF verifier in the background ({args}); log: {log}")
    with log.open("wb") as out:
        build = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)

    def wait() -> Path:
        if build.wait() != 0:
            tail = log.read_text(errors="replace")[-3000:]
            session.error(f"building llama-cpp-python failed (full log: {log}):\n{tail}")
        partial.rename(folder)  # a wheel folder is whole or absent
        return next(folder.glob("*.whl"))

    return wait


def holds_wheel_libraries(venv: Path, wheel: Path) -> bool:
    """Whether the venv's installed package has every shared library of `wheel`, with the same bytes."""
    with zipfile.ZipFile(wheel) as archive:
        libraries = {n: archive.read(n) for n in archive.namelist() if re.search(r"/lib/[^/]+\.(so|dylib|dll)", n)}
    for name, data in libraries.items():
        installed = [*venv.glob(f"lib/python*/site-packages/{name}"), *venv.glob(f"Lib/site-packages/{name}")]
        if not installed or installed[0].read_bytes() != data:
            return False
    return bool(libraries)


def install(session: nox.Session, *extras: str) -> Callable[[], None]:
    """Installs the project with `extras`; with "prep", returns the function that finishes by installing the
    portable llama.cpp once its wheel is ready (call it before anything runs llama.cpp)."""
    wheel = llama_cpp_build(session) if "prep" in extras else None
    session.install("-e", f".[{','.join(extras)}]")

    def finish() -> None:
        if wheel is None:
            return
        built = wheel()
        # Installed by path, from the wheelhouse: never the sdist, so pip's wheel cache is never read. A reused venv
        # may hold another build (a native one from an earlier install or a hand-made `pip install`): replaced
        # unless its libraries are this wheel's, byte for byte.
        session.install(str(built))  # with its dependencies (diskcache, jinja2...); a no-op when installed
        if not holds_wheel_libraries(Path(session.virtualenv.location), built):
            session.install("--no-deps", "--force-reinstall", str(built))
        session.run_install("python", "-m", "model_prep.llama_cpp_isa")  # fails the session on a non-portable build

    return finish


def build_web(session: nox.Session) -> None:
    """npm ci + copy the runtime (Transformers.js, ORT wasm, marked, DOMPurify) into web/vendor, once per lockfile
    and vendor script: a changed list of vendored files must not leave an old checkout with stale ones."""
    inputs = (WEB / "package-lock.json").read_bytes() + (WEB / "scripts" / "vendor.mjs").read_bytes()
    stamp = WEB / "vendor" / ".lock-sha256"
    want = hashlib.sha256(inputs).hexdigest()
    if stamp.is_file() and stamp.read_text() == want:
        return
    with session.chdir(WEB):
        session.run_install("npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", external=True, env=NPM_ENV)
        session.run_install("npm", "run", "vendor", external=True)
    stamp.write_text(want)


def check_js(session: nox.Session) -> None:
    """tsc over the worker protocol and the modules that send it (web/tsconfig*.json), then the pure modules' Node
    tests (web/test/, web/src/*.test.js). Needs build_web first: TypeScript from web/node_modules, hash-wasm from
    web/vendor."""
    tsc = WEB / "node_modules" / "typescript" / "bin" / "tsc"
    if not tsc.is_file():  # build_web's stamp matched, but node_modules is gone or older than the devDependencies
        with session.chdir(WEB):
            session.run_install("npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", external=True, env=NPM_ENV)
    with session.chdir(WEB):
        for project in ("tsconfig.json", "tsconfig.workers.json"):
            session.run("node", str(tsc), "-p", project, external=True)
        session.run("node", "--import", "./scripts/node-vendor.mjs", "--test", "test/", external=True)


def ensure_model(session: nox.Session, recipe: str = DEFAULT_MODEL) -> None:
    if not (MODELS / recipe / "manifest.json").is_file():
        session.run("python", "-m", "model_prep", "export", recipe, "--out", str(MODELS))


def ensure_chromium(session: nox.Session) -> str:
    """The tests drive Debian's Chromium (Playwright cannot download its own browser here)."""
    path = os.environ.get("EDGE_CHAT_CHROMIUM", "/usr/bin/chromium")
    if Path(path).is_file():
        return path
    if os.geteuid() == 0 and shutil.which("apt-get"):
        session.run("apt-get", "update", "-q", external=True)
        session.run(
            "apt-get", "install", "-y", "-q", "chromium", external=True, env={"DEBIAN_FRONTEND": "noninteractive"}
        )
        return path
    session.error(f"no Chromium at {path}: install Debian's `chromium` or set EDGE_CHAT_CHROMIUM=/path/to/chrome")


@nox.session
def serve(session: nox.Session) -> None:
    """Build the default model if missing, then serve http://127.0.0.1:8000 (extra args go to `python -m app`).

    The models folder is only read; results and the --lan certificate go to the state folder (`-- --state DIR`,
    $EDGE_CHAT_STATE, else ~/.local/state/edge-chat). `-- --lan`: https on the network, token printed with the URL;
    `-- --models-base-url URL`: the page downloads artifacts from a copy of models/ at URL (CDN, bucket).
    """
    finish_install = install(session, "app", "prep")
    build_web(session)
    finish_install()
    ensure_model(session)
    session.run("python", "-m", "app", "--models", str(MODELS), "--web", str(WEB), *session.posargs)


@nox.session
def export(session: nox.Session) -> None:
    """`nox -s export -- RECIPE... [--source S] [--out DIR]` (no recipe: qwen3-0.6b and smolvlm-256m)."""
    install(session, "prep")()
    session.run("python", "-m", "model_prep", "export", *session.posargs)


@nox.session
def tests(session: nox.Session) -> None:
    """Unit tests, pipeline tests on tiny models, and Playwright in Chromium on the default model."""
    finish_install = install(session, "app", "prep", "test")
    chromium = ensure_chromium(session)
    build_web(session)
    check_js(session)
    finish_install()
    ensure_model(session)
    session.run("pytest", *(session.posargs or ["-q"]), env={"EDGE_CHAT_CHROMIUM": chromium})


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    build_web(session)
    check_js(session)


@nox.session
def bench(session: nox.Session) -> None:
    """`python -m bench` (Chromium, native onnxruntime, wllama): build/bench/results.jsonl + report.html.

    Defaults are sized for a 2-core machine: smollm2-135m on WASM, fp32 and q4 (q4 shows the cost of WASM's
    MatMulNBits), 1 and 2 threads. Arguments after `--` go to `python -m bench` (see `python -m bench -h`).
    """
    finish_install = install(session, "app", "prep", "test", "bench")
    chromium = ensure_chromium(session)
    build_web(session)
    finish_install()
    ensure_model(session)
    session.run("python", "-m", "bench", *session.posargs, env={"EDGE_CHAT_CHROMIUM": chromium})
