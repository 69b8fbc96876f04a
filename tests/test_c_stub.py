"""ddl/_C.pyi against the real extension: the same names, the same parameters, and constants
that are the C enums' values (exported from C, never copied by hand)."""
import ast
import inspect
import pathlib
import re

import pytest

import ddl
from ddl import _C

ROOT = pathlib.Path(__file__).resolve().parent.parent
STUB = ROOT / "ddl" / "_C.pyi"


def _stub():
    tree = ast.parse(STUB.read_text())
    funcs, consts, aliases, classes = {}, set(), set(), {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            funcs[node.name] = node
        elif isinstance(node, ast.AnnAssign):
            name = node.target.id
            if isinstance(node.annotation, ast.Name) and node.annotation.id == "TypeAlias":
                aliases.add(name)
            else:
                assert isinstance(node.annotation, ast.Name) and node.annotation.id == "int", name
                consts.add(name)
        elif isinstance(node, ast.ClassDef):
            classes[node.name] = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
    return funcs, consts, aliases, classes


def _module_names():
    return {n for n in dir(_C) if not (n.startswith("__") and n.endswith("__"))}


def _params(fn):
    """(name, kind, has default) per parameter, from the stub's ast or the real signature."""
    if isinstance(fn, ast.FunctionDef):
        a = fn.args
        out = []
        pos = a.posonlyargs + a.args
        first_default = len(pos) - len(a.defaults)
        for i, p in enumerate(pos):
            kind = "POSITIONAL_ONLY" if i < len(a.posonlyargs) else "POSITIONAL_OR_KEYWORD"
            out.append((p.arg, kind, i >= first_default))
        if a.vararg:
            out.append((a.vararg.arg, "VAR_POSITIONAL", False))
        for p, d in zip(a.kwonlyargs, a.kw_defaults):
            out.append((p.arg, "KEYWORD_ONLY", d is not None))
        return out
    return [(p.name, p.kind.name, p.default is not p.empty)
            for p in inspect.signature(fn).parameters.values()]


def test_every_public_name_of_the_module_is_in_the_stub_and_back():
    funcs, consts, aliases, classes = _stub()
    stub_names = set(funcs) | consts | set(classes)
    real = _module_names()
    assert sorted(real - stub_names) == [], "names of _C missing from ddl/_C.pyi"
    assert sorted(stub_names - real) == [], "names in ddl/_C.pyi that _C does not have"
    assert not aliases & real, "a stub type alias shadows a real name"


def test_stub_kinds_match_the_module():
    funcs, consts, _, classes = _stub()
    for name in funcs:
        assert callable(getattr(_C, name)) and not isinstance(getattr(_C, name), type), name
    for name in consts:
        value = getattr(_C, name)
        assert isinstance(value, int) and not isinstance(value, bool), name
    for name in classes:
        assert isinstance(getattr(_C, name), type), name


@pytest.mark.parametrize("name", sorted(_stub()[0]))
def test_function_parameters_match_the_text_signature(name):
    stub_fn = _stub()[0][name]
    real = getattr(_C, name)
    assert real.__text_signature__, f"{name}: no text signature (PYDDL_DOC in csrc/python)"
    assert _params(stub_fn) == _params(real)


def test_tensorbase_members_match():
    _, _, _, classes = _stub()
    stub_members = classes["TensorBase"] - {"__len__"}
    real = {n for n, v in vars(_C.TensorBase).items() if not n.startswith("__")}
    assert sorted(real ^ stub_members) == []
    assert len(ddl.zeros(3)) == 3  # __len__ (in the stub) is real


def test_constants_are_the_c_enums():
    headers = "\n".join(p.read_text() for p in (ROOT / "csrc" / "include" / "ddl").glob("*.h"))
    _, consts, _, _ = _stub()
    for name in consts:
        assert re.search(rf"\bDDL_{name}\b", headers), f"_C.{name}: no DDL_{name} in the headers"
    # the values Python relies on: dtype codes index ddl's dtype table, ops are distinct
    from ddl._dtype import BY_CODE

    assert [d.code for d in BY_CODE] == list(range(_C.NUM_DTYPES))
    assert (ddl.float32.code, ddl.float64.code, ddl.int64.code, ddl.bool.code) == (
        _C.FLOAT32, _C.FLOAT64, _C.INT64, _C.BOOL)
    assert (ddl.int32.code, ddl.int16.code, ddl.int8.code, ddl.uint8.code, ddl.float16.code,
            ddl.bfloat16.code) == (_C.INT32, _C.INT16, _C.INT8, _C.UINT8, _C.FLOAT16,
                                   _C.BFLOAT16)
    groups = [
        (("OP_ADD OP_SUB OP_MUL OP_DIV OP_POW OP_MAXIMUM OP_MINIMUM OP_EQ OP_NE OP_LT OP_LE "
          "OP_GT OP_GE"), "NUM_BINARY_OPS"),
        ("OP_NEG OP_EXP OP_LOG OP_SQRT OP_ABS OP_TANH OP_SIGMOID OP_RELU OP_SIGN OP_SIN OP_COS",
         "NUM_UNARY_OPS"),
        (("REDUCE_SUM REDUCE_MEAN REDUCE_MAX REDUCE_MIN REDUCE_ARGMAX REDUCE_ARGMIN REDUCE_VAR "
          "REDUCE_STD REDUCE_PROD"), "NUM_REDUCE_OPS"),
        ("COMM_SUM COMM_AVG COMM_MIN COMM_MAX COMM_PRODUCT", "COMM_NUM_OPS"),
    ]
    for names, count in groups:
        values = sorted(getattr(_C, n) for n in names.split())
        assert values == list(range(getattr(_C, count))), names


def test_python_uses_the_exported_values():
    from ddl import _tensor
    from ddl.distributed import ReduceOp

    assert (_tensor.ADD, _tensor.GE, _tensor.SIGN, _tensor.R_PROD) == (
        _C.OP_ADD, _C.OP_GE, _C.OP_SIGN, _C.REDUCE_PROD)
    assert (ReduceOp.SUM, ReduceOp.AVG, ReduceOp.MIN, ReduceOp.MAX, ReduceOp.PRODUCT) == (
        _C.COMM_SUM, _C.COMM_AVG, _C.COMM_MIN, _C.COMM_MAX, _C.COMM_PRODUCT)


def test_the_stub_ships_with_the_package():
    text = (ROOT / "pyproject.toml").read_text()
    assert "_C.pyi" in text
