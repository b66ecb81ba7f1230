"""Is the installed native llama.cpp portable? Its x86-64 libraries may hold no instruction above AVX2.

llama-cpp-python builds llama.cpp from its sdist with `-march=native` unless told otherwise. On an Intel CPU with
AMX that compiles ggml's AMX kernels, and a batched eval then dies with SIGILL (a core dump, not an error).
noxfile.py builds the library for an AVX2 baseline instead; this module is how the build, the tests and the
verifier check that what is installed really is that build, by disassembling it (binutils' objdump).

Stdlib only: noxfile.py runs it (`python -m model_prep.llama_cpp_isa`) in a session's venv before anything
imports llama_cpp.
"""

from __future__ import annotations

import hashlib
import importlib.util
import platform
import re
import shutil
import subprocess
import sys
from collections import Counter
from functools import cache
from pathlib import Path

from .errors import PrepError

# What x86-64 code above the AVX2 + FMA + F16C + BMI2 baseline looks like. AVX-512 of any width is EVEX-encoded, and
# in 64-bit mode an instruction whose first byte (after address-size or segment prefixes) is 0x62 is EVEX. AMX
# (VEX-encoded): its tile registers and instructions. AVX-VNNI, AVX-IFMA and the BF16 conversions have VEX forms
# too, so they are matched by mnemonic (AT&T syntax, as objdump prints it).
EVEX = 0x62
PREFIXES_BEFORE_EVEX = frozenset({0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0x67})
ABOVE_AVX2_VEX = re.compile(
    r"%tmm\d|^(?:\{vex\}\s*)?(?:ldtilecfg|sttilecfg|tile\w+|tdp\w+|vpdpb\w+|vpdpw\w+|vpmadd52\w+|vdpbf16ps"
    r"|vcvtne\w*bf16\w*)\b"
)


class NativeBuildNotPortable(PrepError):
    def __init__(self, found: dict[str, int]) -> None:
        listed = ", ".join(f"{name}: {count}" for name, count in sorted(found.items()))
        super().__init__(
            f"the installed llama.cpp (llama-cpp-python) was compiled for this machine's CPU and holds instructions "
            f"above the AVX2 baseline ({listed}); on CPUs with AMX or AVX-512 such a build dies with SIGILL. "
            "Reinstall the portable build: `nox -s tests` or `nox -s serve` (noxfile.py builds it with "
            "GGML_NATIVE=OFF), or `pip install --no-cache-dir --force-reinstall llama-cpp-python==0.3.36` with "
            'CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"'
        )


class LlamaCppMissing(PrepError):
    def __init__(self) -> None:
        super().__init__(
            "llama-cpp-python is not installed: the GGUF variant is verified on a real llama.cpp. Run the export "
            "through nox (`nox -s export -- RECIPE`), which builds and installs a portable llama.cpp"
        )


def is_x86_64() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


def instructions_above_avx2(library: Path) -> Counter[str]:
    """How often each kind of above-baseline instruction occurs in `library` (empty: within the baseline)."""
    listing = subprocess.run(
        ["objdump", "-d", "--no-addresses", str(library)], check=True, capture_output=True, text=True
    ).stdout
    found: Counter[str] = Counter()
    for line in listing.splitlines():
        fields = line.split("\t")
        if len(fields) < 3:  # labels, headers, and the second line of a long instruction's bytes
            continue
        raw, instruction = fields[1].split(), fields[2].strip()
        opcode = [int(b, 16) for b in raw]
        while opcode and opcode[0] in PREFIXES_BEFORE_EVEX:
            opcode.pop(0)
        vex = ABOVE_AVX2_VEX.search(instruction)
        if vex:
            found["AMX" if vex.group(0).startswith(("%tmm", "tile", "tdp", "ldtile", "sttile")) else "VNNI/BF16"] += 1
        elif opcode and opcode[0] == EVEX:
            found["AVX-512"] += 1
    return found


def llama_cpp_libraries() -> list[Path]:
    """The shared libraries of the installed llama_cpp package, found without importing it (import loads them)."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return []
    lib = Path(next(iter(spec.submodule_search_locations))) / "lib"
    # A wheel holds no symlinks: libx.so, libx.so.0 and libx.so.0.1 are copies of one file. Scan each once.
    unique = {hashlib.sha256(p.read_bytes()).digest(): p for p in sorted(lib.glob("*.so*"), reverse=True)}
    return sorted(unique.values())


@cache
def installed_above_avx2() -> dict[str, int]:
    """Above-baseline instructions in the installed llama.cpp, summed over its libraries; empty where they cannot
    be read (not x86-64, no objdump): there the build's flags are all there is to go on."""
    if not is_x86_64() or shutil.which("objdump") is None:
        return {}
    total: Counter[str] = Counter()
    for library in llama_cpp_libraries():
        total.update(instructions_above_avx2(library))
    return dict(total)


def require_portable_llama_cpp() -> None:
    """Call before `import llama_cpp`: a clear error instead of an ImportError, or of a SIGILL in an eval later."""
    if importlib.util.find_spec("llama_cpp") is None:
        raise LlamaCppMissing()
    found = installed_above_avx2()
    if found:
        raise NativeBuildNotPortable(found)


def main(argv: list[str]) -> int:
    """`python -m model_prep.llama_cpp_isa [LIB...]`: exit 1 when a library (default: the installed llama.cpp)
    holds instructions above AVX2, 2 when there is nothing to check."""
    libraries = [Path(a) for a in argv] or llama_cpp_libraries()
    if not libraries:
        print("no llama_cpp libraries found", file=sys.stderr)
        return 2
    if not is_x86_64() or shutil.which("objdump") is None:
        print("not x86-64 or no objdump: nothing to check")
        return 0
    bad = False
    for library in libraries:
        found = instructions_above_avx2(library)
        bad |= bool(found)
        print(f"{library.name}: {dict(found) or 'within AVX2'}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
