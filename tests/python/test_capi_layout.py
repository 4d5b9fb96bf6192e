"""The ctypes mirror of kindling.h (kindling_spark/capi.py) against the C
compiler and the library.

tests/abi_layout.c, built by CMake beside the tests, prints the size,
alignment and field offsets of every struct of kindling.h and every
constant the mirror copies. Here every ctypes struct must have the same
size and the same fields at the same offsets, the C listing must tile each
struct (so a field added to the header but not to the listing fails too),
every constant must agree, every function the header declares must have a
signature in the mirror, and every status the library names must be in the
mirror's Status enum.

The program is found through $KD_ABI_LAYOUT, else in tests/ beside the
library that kdlib loads; without it the test is skipped, naming the path.
"""
import ctypes
import os
import pathlib
import re
import subprocess

import pytest

from kdlib import ROOT, capi, library_candidates

HEADER = ROOT / "include" / "kindling.h"


def layout_program():
    if os.environ.get("KD_ABI_LAYOUT"):
        return pathlib.Path(os.environ["KD_ABI_LAYOUT"])
    lib = next((p for p in library_candidates() if p.exists()), None)
    return (lib.parent if lib else ROOT / "build") / "tests" / "abi_layout"


@pytest.fixture(scope="module")
def c_layout():
    prog = layout_program()
    if not prog.exists():
        pytest.skip(f"{prog} is not built (cmake --build build --target abi_layout, or set KD_ABI_LAYOUT)")
    out = subprocess.run([str(prog)], check=True, capture_output=True, text=True).stdout
    structs, fields, consts = {}, {}, {}
    for line in out.splitlines():
        kind, *rest = line.split()
        if kind == "struct":
            structs[rest[0]] = (int(rest[1]), int(rest[2]))
            fields[rest[0]] = []
        elif kind == "field":
            fields[rest[0]].append((rest[1], int(rest[2]), int(rest[3])))
        elif kind == "const":
            consts[rest[0]] = int(rest[1])
    return structs, fields, consts


def py_name(c_field):
    return "in_" if c_field == "in" else c_field


def test_every_struct_is_mirrored(c_layout):
    structs, _, _ = c_layout
    assert sorted(structs) == sorted(capi.STRUCTS), "structs listed by abi_layout.c and mirrored in capi.py differ"


@pytest.mark.parametrize("name", sorted(capi.STRUCTS))
def test_struct_layout(c_layout, name):
    structs, fields, _ = c_layout
    size, align = structs[name]
    mirror = capi.STRUCTS[name]
    assert ctypes.sizeof(mirror) == size, f"{name}: ctypes.sizeof {ctypes.sizeof(mirror)}, C sizeof {size}"
    assert ctypes.alignment(mirror) == align, f"{name}: ctypes alignment {ctypes.alignment(mirror)}, C {align}"
    c_fields = fields[name]
    assert [py_name(f) for f, _, _ in c_fields] == [f for f, _ in mirror._fields_], f"{name}: fields differ"
    types = dict(mirror._fields_)
    end = 0
    for field, offset, fsize in c_fields:
        mirrored = getattr(mirror, py_name(field))
        assert (mirrored.offset, mirrored.size) == (offset, fsize), \
            f"{name}.{field}: ctypes offset/size {mirrored.offset}/{mirrored.size}, C {offset}/{fsize}"
        # The C listing tiles the struct: each field starts where the one
        # before ended, rounded up to its alignment (no field left out).
        a = ctypes.alignment(types[py_name(field)])
        assert offset == -(-end // a) * a, f"{name}: a field of the header is missing before {field}"
        end = offset + fsize
    assert size == -(-end // align) * align, f"{name}: a field of the header is missing after {c_fields[-1][0]}"


def test_constants(c_layout):
    _, _, consts = c_layout
    assert consts == capi.CONSTANTS


def test_every_status_is_named(kd):
    lib = kd.load()
    unknown = capi.status_name(lib, 1000)
    for s in capi.Status:
        assert capi.status_name(lib, s) != unknown, f"the library has no name for {s.name}"
    # A status the library names but the mirror lacks: the enum is stale.
    extra = [code for code in range(len(capi.Status), len(capi.Status) + 16)
             if capi.status_name(lib, code) != unknown]
    assert not extra, f"the library names statuses {extra} that capi.Status lacks"


def declared_functions():
    """Names of the functions kindling.h declares: a line that starts with a
    return type and names kd_something( (struct fields are indented, and
    callback typedefs have "(*" before the name)."""
    text = re.sub(r"/\*.*?\*/", "", HEADER.read_text(), flags=re.S)
    return [name for name in re.findall(r"^[A-Za-z_][\w \*]*?\b(kd_[a-z0-9_]+)\(", text, flags=re.M)]


def test_every_function_has_a_signature(kd):
    declared = declared_functions()
    assert len(declared) > 50, f"found only {len(declared)} declarations in {HEADER}"
    assert sorted(declared) == sorted(capi.SIGNATURES), \
        (f"kindling.h and capi.SIGNATURES differ: missing {sorted(set(declared) - set(capi.SIGNATURES))}, "
         f"extra {sorted(set(capi.SIGNATURES) - set(declared))}")
    lib = kd.load()
    missing = [name for name in declared if not hasattr(lib, name)]
    assert not missing, f"the library does not export {missing}"
