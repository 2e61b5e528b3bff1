#!/usr/bin/env python3
"""Checks that include/precopy.h and the Rust declarations in src/*.rs agree.

Compared, both ways:
  - every `#[no_mangle] pub [unsafe] extern "C" fn` against its C prototype: name,
    return type, parameter names and types (Rust types mapped to C);
  - every `#[repr(C)] pub struct` against its `typedef struct`: field names, types,
    order, array lengths;
  - every `pub const PRECOPY_*` against its `#define`: the value;
  - every callback type `pub type PrecopyXFn = Option<unsafe extern "C" fn(..) -> T>`
    against its `typedef T (*precopy_x_fn_t)(..);`: return and parameter types, names;
  - every size the header asserts with PRECOPY_STATIC_ASSERT_(sizeof(T) == N) against
    the Rust `size_of::<T>() == N` assertion for the same type.

Standard library only. Exits 1 and lists every difference when they disagree.
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent
HEADER = ROOT / "include" / "precopy.h"
SOURCES = sorted((ROOT / "src").rglob("*.rs"))

SCALARS = {
    "u8": "uint8_t",
    "u16": "uint16_t",
    "u32": "uint32_t",
    "u64": "uint64_t",
    "i32": "int32_t",
    "i64": "int64_t",
    "usize": "size_t",
    "isize": "ptrdiff_t",
    "f64": "double",
    "f32": "float",
    "c_int": "int",
    "c_char": "char",
    "c_void": "void",
    "()": "void",
}


def c_name(rust_type_name):
    """PrecopyKvmDirtyGfn -> precopy_kvm_dirty_gfn_t."""
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", rust_type_name).lower()
    return snake + "_t"


def rust_to_c(ty):
    """A Rust type as the normalized C type it must be declared as."""
    ty = ty.strip()
    m = re.fullmatch(r"\*(const|mut)\s+(.+)", ty)
    if m:
        inner = rust_to_c(m.group(2))
        return ("const " if m.group(1) == "const" else "") + inner + " *"
    ty = ty.split("::")[-1]
    if ty in SCALARS:
        return SCALARS[ty]
    if re.fullmatch(r"Precopy[A-Za-z0-9]+", ty):
        return c_name(ty)
    raise SystemExit(f"check-header: no C mapping for Rust type `{ty}`")


def norm_c(ty):
    """Normalizes C type spelling: single spaces, `T *` for pointers."""
    ty = re.sub(r"\s*\*\s*", " * ", ty.strip())
    ty = re.sub(r"\s+", " ", ty).strip()
    return ty.replace("* *", "**")


def split_params(text):
    return [p.strip() for p in text.split(",") if p.strip()]


def signature(m):
    """The C return type and (name, C type) parameters of a matched Rust function:
    group 2 its parameters, group 3 its return type (absent: void)."""
    plist = []
    for p in split_params(m.group(2)):
        pname, pty = p.split(":", 1)
        plist.append((pname.strip(), norm_c(rust_to_c(pty))))
    return (norm_c(rust_to_c(m.group(3) or "()")), plist)


def rust_decls():
    fns, structs, consts, sizes = {}, {}, {}, {}
    for path in SOURCES:
        src = path.read_text()
        code = re.sub(r"//[^\n]*", "", src)
        for m in re.finditer(
            r"pub\s+type\s+(Precopy\w+Fn)\s*=\s*Option<\s*unsafe\s+extern\s+\"C\"\s+fn\s*"
            r"\((.*?)\)\s*(?:->\s*([^>,]+?))?\s*,?\s*>\s*;",
            code,
            re.S,
        ):
            fns["(callback) " + c_name(m.group(1))] = signature(m)
        for m in re.finditer(
            r"#\[no_mangle\]\s*pub\s+(?:unsafe\s+)?extern\s+\"C\"\s+fn\s+(\w+)\s*"
            r"\((.*?)\)\s*(?:->\s*([^{]+?))?\s*\{",
            code,
            re.S,
        ):
            fns[m.group(1)] = signature(m)
        for m in re.finditer(
            r"#\[repr\(C(?:,\s*align\((\d+)\))?\)\]\s*(?:#\[[^\]]*\]\s*)*"
            r"pub\s+struct\s+(\w+)\s*\{(.*?)\n\}",
            code,
            re.S,
        ):
            fields = [("(align)", m.group(1) or "natural", None)]
            for f in re.finditer(r"pub\s+(\w+)\s*:\s*([^,\n]+),", m.group(3)):
                fname, fty = f.group(1), f.group(2).strip()
                arr = re.fullmatch(r"\[(.+);\s*(.+)\]", fty)
                if arr:
                    length = re.sub(r"\s+", "", arr.group(2))
                    fields.append((fname, norm_c(rust_to_c(arr.group(1))), length))
                else:
                    fields.append((fname, norm_c(rust_to_c(fty)), None))
            structs[c_name(m.group(2))] = fields
        for m in re.finditer(
            r"pub\s+const\s+(PRECOPY_\w+)\s*:\s*\w+\s*=\s*(-?\s*\d+)\s*;", code
        ):
            consts[m.group(1)] = int(m.group(2).replace(" ", ""))
        for m in re.finditer(r"size_of::<(Precopy\w+)>\(\)\s*==\s*(\w+)", code):
            sizes[c_name(m.group(1))] = m.group(2)
    return fns, structs, consts, sizes


def c_decls():
    text = HEADER.read_text()
    code = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    code = re.sub(r"//[^\n]*", "", code)
    consts = {}
    for m in re.finditer(r"#define\s+(PRECOPY_[A-Z0-9_]+)\s+\(?\s*(-?\d+)\s*\)?\s*$", code, re.M):
        consts[m.group(1)] = int(m.group(2))
    structs = {}
    for m in re.finditer(r"typedef\s+struct\s+(\w+)\s*\{(.*?)\}\s*(\w+)\s*;", code, re.S):
        tag, body, name = m.group(1), m.group(2), m.group(3)
        if tag + "_t" != name:
            raise SystemExit(f"check-header: typedef {name} has tag {tag}")
        align = "64" if "PRECOPY_ALIGN64" in body else "natural"
        body = body.replace("PRECOPY_ALIGN64", "")
        fields = [("(align)", align, None)]
        for decl in [d.strip() for d in body.split(";") if d.strip()]:
            arr = re.fullmatch(r"(.+?)\s*(\w+)\s*\[(.+)\]", decl, re.S)
            if arr:
                fields.append((arr.group(2), norm_c(arr.group(1)), re.sub(r"\s+", "", arr.group(3))))
            else:
                fm = re.fullmatch(r"(.+?)\s*\b(\w+)", decl, re.S)
                fields.append((fm.group(2), norm_c(fm.group(1)), None))
        structs[name] = fields
    fns = {}
    for m in re.finditer(
        r"typedef\s+([A-Za-z_][\w \t\*]*?)\s*\(\s*\*\s*(precopy_\w+_fn_t)\s*\)\s*\(([^;]*?)\)\s*;",
        code,
        re.S,
    ):
        ret, name, params = norm_c(m.group(1)), m.group(2), m.group(3)
        plist = []
        for p in split_params(params):
            pm = re.fullmatch(r"(.+?)\s*\b(\w+)", p, re.S)
            plist.append((pm.group(2), norm_c(pm.group(1))))
        fns["(callback) " + name] = (ret, plist)
    for m in re.finditer(r"^([A-Za-z_][\w \t\*]*?)\b(precopy_\w+)\s*\(([^;{]*?)\)\s*;", code, re.M | re.S):
        ret, name, params = norm_c(m.group(1)), m.group(2), m.group(3)
        plist = []
        if params.strip() != "void":
            for p in split_params(params):
                pm = re.fullmatch(r"(.+?)\s*\b(\w+)", p, re.S)
                plist.append((pm.group(2), norm_c(pm.group(1))))
        fns[name] = (ret, plist)
    sizes = {}
    for m in re.finditer(r"PRECOPY_STATIC_ASSERT_\(\s*sizeof\((\w+)\)\s*==\s*(\w+)", code):
        sizes[m.group(1)] = m.group(2)
    return fns, structs, consts, sizes


def compare(kind, rust, c, problems):
    for name in sorted(set(rust) | set(c)):
        if name not in c:
            problems.append(f"{kind} {name}: in the Rust source, missing from precopy.h")
        elif name not in rust:
            problems.append(f"{kind} {name}: in precopy.h, missing from the Rust source")
        elif rust[name] != c[name]:
            problems.append(f"{kind} {name}:\n    Rust: {rust[name]}\n    C:    {c[name]}")


def main():
    r_fns, r_structs, r_consts, r_sizes = rust_decls()
    c_fns, c_structs, c_consts, c_sizes = c_decls()
    if not r_fns or not c_fns:
        print("check-header: found no functions; is the parser broken?")
        return 1
    problems = []
    compare("function", r_fns, c_fns, problems)
    compare("struct", r_structs, c_structs, problems)
    compare("constant", r_consts, c_consts, problems)
    compare("size assertion", r_sizes, c_sizes, problems)
    if problems:
        print("precopy.h and the Rust declarations disagree:")
        for p in problems:
            print("  " + p)
        return 1
    print(
        f"check-header: precopy.h matches the Rust source: {len(r_fns)} functions, "
        f"{len(r_structs)} structs, {len(r_consts)} constants, {len(r_sizes)} size assertions"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
