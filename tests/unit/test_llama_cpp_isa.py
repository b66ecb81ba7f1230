"""The native llama.cpp must run on any x86-64 CPU with AVX2 (issue: a -march=native build SIGILLs on AMX CPUs).

The scanner is checked on tiny libraries gcc compiles here with and without instructions above AVX2, then used on
the installed llama-cpp-python: a library built the old way (GGML_NATIVE on an AVX-512/AMX machine, or
`-march=sapphirerapids`) fails test_installed_llama_cpp_stays_within_avx2.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from model_prep import llama_cpp_isa as native_isa
from model_prep.llama_cpp_isa import NativeBuildNotPortable, instructions_above_avx2

pytestmark = pytest.mark.skipif(
    not native_isa.is_x86_64() or not shutil.which("objdump") or not shutil.which("gcc"),
    reason="x86-64 with binutils and gcc only",
)

SOURCES = {
    "avx2": ("-mavx2 -mfma -mf16c -mbmi2", "__m256 f(__m256 a, __m256 b) { return _mm256_fmadd_ps(a, b, a); }"),
    "amx": (
        "-mamx-tile -mamx-int8",
        "void f(const void *a, void *c) { _tile_loadd(0, a, 64); _tile_dpbssd(2, 0, 1); _tile_stored(2, c, 64); }",
    ),
    "avx512": ("-mavx512f", "__m512 f(__m512 a, __m512 b) { return _mm512_add_ps(a, b); }"),
    "avx512vl": ("-mavx512f -mavx512vl", "__m256 f(__m256 a, __m256 b) { return _mm256_max_ps(a, b); }\n"
                 "__m256i g(__m256i a, __m256i b) { return _mm256_ternarylogic_epi32(a, b, a, 0x96); }"),
    "avxvnni": ("-mavxvnni", "__m256i f(__m256i a, __m256i b, __m256i c) { return _mm256_dpbusd_avx_epi32(a, b, c); }"),
}  # fmt: skip


def compile_library(tmp_path: Path, name: str) -> Path:
    flags, body = SOURCES[name]
    source = tmp_path / f"{name}.c"
    source.write_text(f"#include <immintrin.h>\n{body}\n")
    library = tmp_path / f"lib{name}.so"
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", *flags.split(), str(source), "-o", str(library)], check=True)
    return library


def test_avx2_code_is_within_the_baseline(tmp_path: Path) -> None:
    assert instructions_above_avx2(compile_library(tmp_path, "avx2")) == {}


@pytest.mark.parametrize(
    ("name", "kind"), [("amx", "AMX"), ("avx512", "AVX-512"), ("avx512vl", "AVX-512"), ("avxvnni", "VNNI/BF16")]
)
def test_code_above_avx2_is_found(tmp_path: Path, name: str, kind: str) -> None:
    found = instructions_above_avx2(compile_library(tmp_path, name))
    assert set(found) == {kind}
    assert found[kind] >= 1


def test_a_non_portable_build_is_a_clear_error_not_a_sigill(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    libraries = [compile_library(tmp_path, "avx2"), compile_library(tmp_path, "amx")]
    monkeypatch.setattr(native_isa, "llama_cpp_libraries", lambda: libraries)
    monkeypatch.setattr(native_isa.importlib.util, "find_spec", lambda name: object())
    native_isa.installed_above_avx2.cache_clear()
    try:
        with pytest.raises(NativeBuildNotPortable, match=r"above the AVX2 baseline \(AMX: 3\).*GGML_NATIVE=OFF"):
            native_isa.require_portable_llama_cpp()
        assert native_isa.main([str(p) for p in libraries]) == 1
        assert native_isa.main([str(libraries[0])]) == 0
    finally:
        native_isa.installed_above_avx2.cache_clear()


def test_installed_llama_cpp_stays_within_avx2() -> None:
    """noxfile.py builds llama-cpp-python with GGML_NATIVE off at an AVX2 baseline; this is what makes it so."""
    libraries = native_isa.llama_cpp_libraries()
    if not libraries:
        pytest.skip("llama-cpp-python is not installed")
    assert {lib.name.split(".so")[0] for lib in libraries} >= {"libggml-cpu", "libllama"}
    assert {lib.name: dict(instructions_above_avx2(lib)) for lib in libraries} == {lib.name: {} for lib in libraries}


def test_a_missing_llama_cpp_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native_isa.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(native_isa.LlamaCppMissing, match="nox -s export"):
        native_isa.require_portable_llama_cpp()
