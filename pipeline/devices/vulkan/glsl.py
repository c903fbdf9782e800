"""Lowered TIR device kernels -> GLSL 450 compute shaders.

TVM hands ``target.build.vulkan`` one PrimFunc per kernel: flat buffers over pointer parameters, scalar
parameters, ``thread_extent`` attributes that bind ``blockIdx.*`` / ``threadIdx.*``, local and shared
allocations, loops, lets and conditionals. Each becomes a self-contained shader:

- pointer parameters -> std430 storage buffers at set 0, bindings in parameter order;
- scalar parameters -> one push-constant block, at the offsets ``KernelInfo.args`` records for the runtime;
- ``threadIdx.*`` extents -> the shader's ``local_size`` (constants: TVM binds threads with fixed extents);
  ``blockIdx.*`` -> ``gl_WorkGroupID``, dispatched by the runtime from the launch extents;
- shared allocations -> ``shared`` arrays, ``tvm_storage_sync`` -> ``barrier()``;
- float16 (fp16 builds) -> ``float16_t`` (GL_EXT_shader_explicit_arithmetic_types_float16, the device's
  ``shaderFloat16``), float16 storage buffers through GL_EXT_shader_16bit_storage (``storageBuffer16BitAccess``):
  products, sums and comparisons are half operations; math functions are evaluated in float and rounded once.

Semantics GLSL does not share with TIR are spelled out: TIR's ``Mod`` truncates (glslang turns ``%`` into
OpSMod, which floors), ``floordiv``/``floormod`` round towards minus infinity, ``tanh`` and ``erf`` get
overflow-safe definitions. Anything this generator does not know is refused with the kernel's name, never
guessed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from atrous.pipeline.errors import AtrousError
from atrous.pipeline.tir_walk import statements


class ShaderCodegenError(AtrousError):
    """A device kernel uses something the GLSL generator cannot express (names the kernel and the construct)."""


@dataclass(frozen=True)
class KernelInfo:
    """What the runtime needs to launch one shader (see runtime/src/vulkan/ for the consumer)."""

    name: str
    args: tuple[dict, ...]  # {"kind": "buffer", "binding": b} or {"kind": "int32"|"int64"|"float32", "offset": o}
    push_constant_size: int
    launch: tuple[str, ...]  # tags of the launch-extent arguments that follow ``args`` at call time
    local_size: tuple[int, int, int]
    shared_bytes: int

    def header(self, spirv_offset: int, spirv_size: int) -> dict:
        return {"spirv": [spirv_offset, spirv_size], "entry": "main", "args": list(self.args),
                "push_constant_size": self.push_constant_size, "launch": list(self.launch),
                "local_size": list(self.local_size)}


@dataclass
class Shader:
    source: str
    info: KernelInfo


SCALARS = {"float32": "float", "int32": "int", "uint32": "uint", "int64": "int64_t", "uint64": "uint64_t",
           "bool": "bool", "float16": "float16_t"}
PUSH_SCALARS = {"int32": 4, "float32": 4, "int64": 8}  # push-constant kinds the runtime fills, with their size
THREAD_AXES = {"blockIdx.x": "gl_WorkGroupID.x", "blockIdx.y": "gl_WorkGroupID.y", "blockIdx.z": "gl_WorkGroupID.z",
               "threadIdx.x": "gl_LocalInvocationID.x", "threadIdx.y": "gl_LocalInvocationID.y",
               "threadIdx.z": "gl_LocalInvocationID.z"}
RESERVED = {"input", "output", "filter", "sample", "buffer", "shared", "in", "out", "inout", "uniform", "main",
            "layout", "common", "partition", "active", "packed", "union", "template", "this", "goto", "inline",
            "noinline", "public", "static", "extern", "external", "interface", "long", "short", "half", "fixed",
            "unsigned", "superp", "cast", "namespace", "using", "row_major", "precision", "resource", "pc", "data",
            "coherent", "volatile", "restrict", "readonly", "writeonly", "atomic_uint", "int", "float", "bool",
            "uint", "double", "void", "discard", "return", "struct", "const", "highp", "lowp", "mediump", "attribute",
            "varying", "invariant", "precise", "flat", "smooth", "centroid", "patch", "subroutine", "switch", "case",
            "default", "while", "for", "do", "if", "else", "break", "continue", "true", "false", "sizeof", "typedef",
            "asm", "class", "enum", "dot", "min", "max", "exp", "log", "abs", "sign", "floor",
            "ceil", "round", "mix", "step", "clamp", "length", "distance", "normalize", "reflect", "pow", "sqrt",
            "tanh", "sin", "cos", "tan", "fract", "mod"}

# TIR math intrinsics (and the libm names TVM emits through call_pure_extern) -> GLSL, or an own helper.
MATH = {"exp": "exp", "exp2": "exp2", "log": "log", "log2": "log2", "sqrt": "sqrt", "rsqrt": "inversesqrt",
        "pow": "pow", "fabs": "abs", "floor": "floor", "ceil": "ceil", "trunc": "trunc", "round": "roundEven",
        "nearbyint": "roundEven", "sin": "sin", "cos": "cos", "tan": "tan", "atan": "atan", "fma": "fma",
        "tanh": "atrous_tanh", "erf": "atrous_erf", "sigmoid": "atrous_sigmoid", "log1p": "atrous_log1p",
        "exp10": "atrous_exp10", "isnan": "isnan", "isinf": "isinf", "fmin": "min", "fmax": "max"}

HELPERS = {
    "atrous_tanh": "float atrous_tanh(float x) {\n"
                   "  // exp of a negative argument never overflows, unlike (e^2x - 1) / (e^2x + 1)\n"
                   "  float e = exp(-2.0 * abs(x));\n  float t = (1.0 - e) / (1.0 + e);\n"
                   "  return x < 0.0 ? -t : t;\n}",
    "atrous_sigmoid": "float atrous_sigmoid(float x) { return 1.0 / (1.0 + exp(-x)); }",
    "atrous_erf": "float atrous_erf(float x) {\n"
                  "  // Abramowitz & Stegun 7.1.26: |error| < 1.5e-7\n"
                  "  float t = 1.0 / (1.0 + 0.3275911 * abs(x));\n"
                  "  float p = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + "
                  "t * 1.061405429))));\n"
                  "  float y = 1.0 - p * exp(-x * x);\n  return x < 0.0 ? -y : y;\n}",
    "atrous_log1p": "float atrous_log1p(float x) { return log(1.0 + x); }",
    "atrous_exp10": "float atrous_exp10(float x) { return exp2(x * 3.3219280948873623); }",
}


def _int_helpers(t: str) -> dict[str, str]:
    """TIR's integer division flavours for the GLSL integer type ``t`` (GLSL ``/`` truncates, like TIR Div)."""
    return {
        f"atrous_truncmod_{t}": f"{t} atrous_truncmod_{t}({t} a, {t} b) {{ return a - (a / b) * b; }}",
        f"atrous_floordiv_{t}": (f"{t} atrous_floordiv_{t}({t} a, {t} b) {{\n  {t} q = a / b;\n"
                                 f"  return (q * b != a && ((a < {t}(0)) != (b < {t}(0)))) ? q - {t}(1) : q;\n}}"),
        f"atrous_floormod_{t}": (f"{t} atrous_floormod_{t}({t} a, {t} b) {{\n  {t} r = a - (a / b) * b;\n"
                                 f"  return (r != {t}(0) && ((r < {t}(0)) != (b < {t}(0)))) ? r + b : r;\n}}"),
    }


for _t in ("int", "int64_t"):
    HELPERS.update(_int_helpers(_t))
for _t in ("float", "float16_t"):
    HELPERS[f"atrous_floormod_{_t}"] = f"{_t} atrous_floormod_{_t}({_t} a, {_t} b) {{ return a - floor(a / b) * b; }}"
    HELPERS[f"atrous_truncmod_{_t}"] = f"{_t} atrous_truncmod_{_t}({_t} a, {_t} b) {{ return a - trunc(a / b) * b; }}"
FLOATS = ("float", "float16_t")

BINARY = {"Add": "+", "Sub": "-", "Mul": "*", "EQ": "==", "NE": "!=", "LT": "<", "LE": "<=", "GT": ">", "GE": ">=",
          "And": "&&", "Or": "||", "BitwiseAnd": "&", "BitwiseOr": "|", "BitwiseXor": "^", "LShift": "<<",
          "RShift": ">>"}


def dtype_of(expr) -> str:
    return str(expr.ty.dtype) if hasattr(expr.ty, "dtype") else str(expr.ty)


def glsl_float(value: float) -> str:
    """A float32 literal that parses back to exactly ``value`` (inf/nan through their bit patterns)."""
    v = float(np.float32(value))
    if math.isnan(v):
        return "uintBitsToFloat(0x7fc00000u)"
    if math.isinf(v):
        return "uintBitsToFloat(0x7f800000u)" if v > 0 else "uintBitsToFloat(0xff800000u)"
    text = repr(v)
    return text if any(c in text for c in ".e") else text + ".0"


class GLSLWriter:
    """Writes one kernel. ``write()`` returns the shader; errors name the kernel."""

    def __init__(self, name: str, func, target_attrs: dict):
        self.name = name
        self.func = func
        self.limits = target_attrs
        self.names: dict = {}  # Var -> GLSL identifier
        self.taken: set[str] = set()
        self.buffers: dict = {}  # tirx Buffer -> GLSL array expression prefix
        self.storage: dict = {}  # pointer Var -> (GLSL name, element type); one storage buffer per parameter
        self.stored: set[str] = set()
        self.loaded: set[str] = set()
        self.shared: list[str] = []
        self.shared_bytes = 0
        self.helpers: list[str] = []
        self.int64 = False
        self.float16 = False  # float16 arithmetic anywhere in the kernel
        self.storage16 = False  # a storage buffer of float16
        self.local_size = {"x": 1, "y": 1, "z": 1}
        self.lines: list[str] = []
        self.pending: list[str] = []  # declarations hoisted from Let expressions, flushed before the statement
        self.depth = 1

    # -- names --------------------------------------------------------------------------------------------------
    def fail(self, what: str):
        raise ShaderCodegenError(f"Vulkan kernel '{self.name}': {what}")

    def ident(self, var) -> str:
        if var in self.names:
            return self.names[var]
        base = re.sub(r"[^A-Za-z0-9_]", "_", str(var.name) if hasattr(var, "name") else str(var))
        base = re.sub(r"_+", "_", base).strip("_") or "v"
        if base[0].isdigit() or base.startswith("gl_") or base in RESERVED or base.startswith("atrous_"):
            base = "v_" + base
        name, k = base, 1
        while name in self.taken:
            k += 1
            name = f"{base}_{k}"
        self.taken.add(name)
        self.names[var] = name
        return name

    def scalar(self, dtype: str) -> str:
        if dtype not in SCALARS:
            self.fail(f"data type {dtype} has no GLSL equivalent here (vector lanes or a type Vulkan storage "
                      "buffers do not hold portably)")
        if dtype in ("int64", "uint64"):
            self.int64 = True
        if dtype == "float16":
            self.float16 = True
        return SCALARS[dtype]

    def helper(self, name: str) -> str:
        if name not in self.helpers:
            self.helpers.append(name)
        return name

    # -- parameters ---------------------------------------------------------------------------------------------
    def params(self) -> tuple[list[str], tuple[dict, ...], int]:
        """Storage-buffer and push-constant declarations, the runtime's argument table, push-constant bytes."""
        decls, args, pushes, offset, binding = [], [], [], 0, 0
        element = self._pointer_element_types()
        for param in self.func.params:
            ty = param.ty
            if hasattr(ty, "element_type"):  # a pointer: one storage buffer
                name = self.ident(param)
                elem = element.get(param) or str(ty.element_type.dtype)
                self.storage[param] = (name, self.scalar(elem))
                self.storage16 |= elem == "float16"
                args.append({"kind": "buffer", "binding": binding})
                binding += 1
                continue
            dtype = dtype_of(param)
            if dtype not in PUSH_SCALARS:
                self.fail(f"scalar parameter {param.name} of type {dtype} cannot be passed as a push constant")
            size = PUSH_SCALARS[dtype]
            offset = (offset + size - 1) // size * size
            pushes.append(f"  layout(offset = {offset}) {self.scalar(dtype)} {self.ident(param)};")
            args.append({"kind": dtype, "offset": offset})
            offset += size
        if pushes:
            decls.append("layout(push_constant) uniform Push {\n" + "\n".join(pushes) + "\n} pc;")
        return decls, tuple(args), offset

    def _pointer_element_types(self) -> dict:
        """Element type of each pointer parameter, from the buffers declared over it."""
        found: dict = {}
        for stmt in statements(self.func.body):
            if type(stmt).__name__ == "DeclBuffer":
                found.setdefault(stmt.data, str(stmt.buffer.dtype))
        return found

    def storage_decls(self) -> list[str]:
        out = []
        for binding, (param, (name, elem)) in enumerate(self.storage.items()):
            access = " readonly" if name not in self.stored else (" writeonly" if name not in self.loaded else "")
            out.append(f"layout(std430, set = 0, binding = {binding}) restrict{access} buffer Buffer{binding} "
                       f"{{ {elem} {name}[]; }};")
        return out

    # -- statements ---------------------------------------------------------------------------------------------
    def emit(self, line: str):
        for decl in self.pending:
            self.lines.append("  " * self.depth + decl)
        self.pending.clear()
        self.lines.append("  " * self.depth + line)

    def block(self, stmt):
        self.depth += 1
        self.stmt(stmt)
        self.depth -= 1

    def stmt(self, s):
        kind = type(s).__name__
        method = getattr(self, "stmt_" + kind, None)
        if method is None:
            self.fail(f"statement {kind} is not supported")
        method(s)

    def stmt_SeqStmt(self, s):
        for child in s.seq:
            self.stmt(child)

    def stmt_DeclBuffer(self, s):
        if s.data in self.storage:
            name, elem = self.storage[s.data]
            if self.scalar(str(s.buffer.dtype)) != elem:
                self.fail(f"buffer {s.buffer.name} views parameter {name} as {s.buffer.dtype}, not {elem}")
            self.buffers[s.buffer] = name
        elif s.data in self.names:  # a view of an allocation
            self.buffers[s.buffer] = self.names[s.data]
        else:
            self.fail(f"buffer {s.buffer.name} is declared over an unknown pointer {s.data}")

    def stmt_AllocBuffer(self, s):
        buf = s.buffer
        scope = buf.scope() if callable(buf.scope) else str(buf.scope)
        size = 1
        for extent in buf.shape:
            if type(extent).__name__ != "IntImm":
                self.fail(f"allocation {buf.name} has a dynamic size {list(buf.shape)}")
            size *= int(extent.value)
        elem = self.scalar(str(buf.dtype))
        name = self.ident(buf.data)
        self.buffers[buf] = name
        if scope == "shared":
            self.shared.append(f"shared {elem} {name}[{size}];")
            self.shared_bytes += size * np.dtype(str(buf.dtype)).itemsize
        elif scope == "local":
            self.emit(f"{elem} {name}[{size}];")
        else:
            self.fail(f"allocation {buf.name} in memory scope '{scope}' (the backend has local and shared)")

    def stmt_AttrStmt(self, s):
        if s.attr_key == "thread_extent":
            tag = str(s.node.thread_tag)
            if tag not in THREAD_AXES:
                self.fail(f"thread axis '{tag}'")
            if tag.startswith("threadIdx"):
                if type(s.value).__name__ != "IntImm":
                    self.fail(f"{tag} has a dynamic extent {s.value}; Vulkan workgroup sizes are compile-time")
                self.local_size[tag[-1]] = int(s.value.value)
            var = s.node.var
            self.emit(f"const {self.scalar(dtype_of(var))} {self.ident(var)} = "
                      f"{self.scalar(dtype_of(var))}({THREAD_AXES[tag]});")
        self.stmt(s.body)

    def stmt_Bind(self, s):
        value = self.expr(s.value)
        self.emit(f"const {self.scalar(dtype_of(s.var))} {self.ident(s.var)} = {value};")

    stmt_LetStmt = stmt_Bind

    def stmt_For(self, s):
        kind = str(s.kind)
        if "VECTORIZED" in kind.upper() or "PARALLEL" in kind.upper():
            self.fail(f"a {kind} loop over {s.loop_var.name} (GPU kernels bind threads instead)")
        var = self.ident(s.loop_var)
        t = self.scalar(dtype_of(s.loop_var))
        low, extent = self.expr(s.min), self.expr(s.extent)
        step = getattr(s, "step", None)
        advance = f"++{var}" if step is None else f"{var} += {t}({self.expr(step)})"
        end = extent if low in ("0", "0l") else f"{low} + {extent}"
        self.emit(f"for ({t} {var} = {low}; {var} < {end}; {advance}) {{")
        self.block(s.body)
        self.emit("}")

    def stmt_IfThenElse(self, s):
        self.emit(f"if ({self.expr(s.condition)}) {{")
        self.block(s.then_case)
        if s.else_case is not None:
            self.emit("} else {")
            self.block(s.else_case)
        self.emit("}")

    def stmt_While(self, s):
        condition = self.expr(s.condition)
        if self.pending:
            self.fail("a while condition with a let expression")
        self.emit(f"while ({condition}) {{")
        self.block(s.body)
        self.emit("}")

    def stmt_Break(self, s):
        self.emit("break;")

    def stmt_Continue(self, s):
        self.emit("continue;")

    def stmt_BufferStore(self, s):
        target = self.access(s.buffer, s.indices)
        self.stored.add(target.split("[", 1)[0])
        self.emit(f"{target} = {self.expr(s.value)};")

    def stmt_Evaluate(self, s):
        if type(s.value).__name__ in ("IntImm", "FloatImm"):
            return
        if _call_name(s.value).endswith(".tvm_storage_sync"):
            scope = str(s.value.args[0].value)
            if scope != "shared":
                self.fail(f"tvm_storage_sync('{scope}') (only shared memory is synchronised)")
            self.emit("memoryBarrierShared();")
            self.emit("barrier();")
            return
        self.emit(f"{self.expr(s.value)};")

    def stmt_AssertStmt(self, s):
        return  # device code cannot report; TVM checks shapes on the host before launching

    # -- expressions --------------------------------------------------------------------------------------------
    def access(self, buf, indices) -> str:
        if buf not in self.buffers:
            self.fail(f"buffer {buf.name} is used but never declared")
        if len(indices) != 1:
            self.fail(f"buffer {buf.name} is indexed with {len(indices)} indices (flat buffers expected)")
        index = indices[0]
        if "x" in dtype_of(index):
            self.fail(f"vector access of buffer {buf.name}")
        text = self.expr(index)
        if dtype_of(index) == "int64":
            size = 1
            for extent in buf.shape:
                size *= int(extent.value) if type(extent).__name__ == "IntImm" else 2 ** 31
            if size >= 2 ** 31:
                self.fail(f"buffer {buf.name} has 2^31 elements or more")
            text = f"int({text})"  # any in-bounds index of a buffer this size fits in 32 bits
        return f"{self.buffers[buf]}[{text}]"

    def expr(self, e) -> str:
        kind = type(e).__name__
        if kind in BINARY:
            return f"({self.expr(e.a)} {BINARY[kind]} {self.expr(e.b)})"
        method = getattr(self, "expr_" + kind, None)
        if method is None:
            self.fail(f"expression {kind} is not supported")
        return method(e)

    def expr_IntImm(self, e):
        dtype, v = dtype_of(e), int(e.value)
        if dtype == "bool":
            return "true" if v else "false"
        if dtype == "int64":
            self.int64 = True
            return f"{v}l" if v > -2 ** 63 else "(-9223372036854775807l - 1l)"
        if dtype == "uint32":
            return f"{v}u"
        if dtype == "int32":
            return str(v) if v > -2 ** 31 else "(-2147483647 - 1)"
        return f"{self.scalar(dtype)}({v})"

    def expr_FloatImm(self, e):
        if dtype_of(e) == "float16":  # a float16 value converts exactly from its float32 literal
            return f"{self.scalar('float16')}({glsl_float(float(e.value))})"
        if dtype_of(e) != "float32":
            self.scalar(dtype_of(e))
            self.fail(f"{dtype_of(e)} constant")
        return glsl_float(float(e.value))

    def expr_Var(self, e):
        if e in self.names:
            return self.names[e]
        self.fail(f"variable {e.name} is used before it is defined")

    def expr_TensorLoad(self, e):  # what tirx.BufferLoad builds in TVM 0.27
        target = self.access(e.source, e.indices)
        self.loaded.add(target.split("[", 1)[0])
        return target

    def expr_Cast(self, e):
        return f"{self.scalar(dtype_of(e))}({self.expr(e.value)})"

    def expr_Not(self, e):
        return f"(!{self.expr(e.a)})"

    def expr_BitwiseNot(self, e):
        return f"(~{self.expr(e.a)})"

    def expr_Select(self, e):
        return f"({self.expr(e.condition)} ? {self.expr(e.true_value)} : {self.expr(e.false_value)})"

    def expr_Min(self, e):
        return f"min({self.expr(e.a)}, {self.expr(e.b)})"

    def expr_Max(self, e):
        return f"max({self.expr(e.a)}, {self.expr(e.b)})"

    def _division(self, e, flavour: str) -> str:
        t = self.scalar(dtype_of(e))
        a, b = self.expr(e.a), self.expr(e.b)
        if t in FLOATS:
            if flavour == "div":
                return f"({a} / {b})"
            if flavour == "floordiv":
                return f"floor({a} / {b})"
            return f"{self.helper(f'atrous_{flavour}_{t}')}({a}, {b})"
        if t not in ("int", "int64_t"):
            self.fail(f"{flavour} on {dtype_of(e)}")
        if flavour == "div":
            return f"({a} / {b})"
        return f"{self.helper(f'atrous_{flavour}_{t}')}({a}, {b})"

    def expr_Div(self, e):
        return self._division(e, "div")

    def expr_Mod(self, e):
        return self._division(e, "truncmod")

    def expr_FloorDiv(self, e):
        return self._division(e, "floordiv")

    def expr_FloorMod(self, e):
        return self._division(e, "floormod")

    def expr_Let(self, e):
        name = self.ident(e.var)
        self.pending.append(f"const {self.scalar(dtype_of(e.var))} {name} = {self.expr(e.value)};")
        return self.expr(e.body)

    def expr_Call(self, e):
        op = _call_name(e) or str(e.op)
        short = op.split(".", 1)[1] if op.startswith(("tirx.", "prim.")) else op
        args = list(e.args)
        if short in ("call_pure_extern", "call_extern"):
            extern = str(args[0].value)
            short = extern[:-1] if extern.endswith("f") and extern[:-1] in MATH else extern
            args = args[1:]
        if short in MATH:
            if dtype_of(e) not in ("float32", "float16", "bool"):
                self.fail(f"{short} on {dtype_of(e)}")
            function = MATH[short]
            if function.startswith("atrous_"):
                self.helper(function)
            # float16 operands: evaluated in float (the helpers are float functions), rounded to float16 once
            operands = ", ".join(f"float({self.expr(a)})" if dtype_of(a) == "float16" else self.expr(a)
                                 for a in args)
            call = f"{function}({operands})"
            return f"{self.scalar('float16')}({call})" if dtype_of(e) == "float16" else call
        if short == "if_then_else":
            return f"({self.expr(args[0])} ? {self.expr(args[1])} : {self.expr(args[2])})"
        if short == "likely":
            return self.expr(args[0])
        if short == "tvm_storage_sync":
            scope = str(args[0].value)
            if scope != "shared":
                self.fail(f"tvm_storage_sync('{scope}')")
            self.fail("tvm_storage_sync inside an expression")
        if short == "reinterpret":
            source, dest = dtype_of(args[0]), dtype_of(e)
            casts = {("float32", "int32"): "floatBitsToInt", ("float32", "uint32"): "floatBitsToUint",
                     ("int32", "float32"): "intBitsToFloat", ("uint32", "float32"): "uintBitsToFloat"}
            if (source, dest) not in casts:
                self.fail(f"reinterpret {source} -> {dest}")
            return f"{casts[(source, dest)]}({self.expr(args[0])})"
        self.fail(f"call to {op}")

    # -- the shader ---------------------------------------------------------------------------------------------
    def write(self) -> Shader:
        decls, args, push_size = self.params()
        self.stmt(self.func.body)
        threads = self.local_size["x"] * self.local_size["y"] * self.local_size["z"]
        limit = int(self.limits.get("max_num_threads", 128))
        if threads > limit:
            self.fail(f"{threads} threads per workgroup, more than the target's {limit}")
        shared_limit = int(self.limits.get("max_shared_memory_per_block", 16384))
        if self.shared_bytes > shared_limit:
            self.fail(f"{self.shared_bytes} bytes of shared memory, more than the target's {shared_limit}")
        launch = tuple(str(t) for t in self.func.attrs.get("tirx.kernel_launch_params", []))
        unknown = [t for t in launch if t not in THREAD_AXES]
        if unknown:
            self.fail(f"launch parameter(s) {unknown} (dynamic shared memory is not supported)")
        header = ["#version 450", f"// {self.name}: generated by atrous from TVM's lowered TIR"]
        if self.int64:
            if not self.limits.get("supports_int64", False):
                self.fail("64-bit integers, which the target does not support (no shaderInt64)")
            header.append("#extension GL_EXT_shader_explicit_arithmetic_types_int64 : require")
        header += self._float16_extensions()
        x, y, z = (self.local_size[a] for a in "xyz")
        header.append(f"layout(local_size_x = {x}, local_size_y = {y}, local_size_z = {z}) in;")
        body = [*header, *self.storage_decls(), *decls, *self.shared,
                *(HELPERS[h] for h in self.helpers), "void main() {",
                *(f"  const {SCALARS[dtype_of(p)]} {self.names[p]} = pc.{self.names[p]};"
                  for p in self.func.params if not hasattr(p.ty, "element_type")),
                *self.lines, "}"]
        info = KernelInfo(self.name, args, push_size, launch, (x, y, z), self.shared_bytes)
        return Shader("\n".join(body) + "\n", info)


    def _float16_extensions(self) -> list[str]:
        """The extensions float16 kernels need, refused where the target lacks the device feature."""
        lines = []
        if self.float16:
            if not self.limits.get("supports_float16", False):
                self.fail("float16 arithmetic, which the target does not support (no shaderFloat16)")
            lines.append("#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require")
        if self.storage16:
            if not self.limits.get("supports_16bit_buffer", False):
                self.fail("float16 storage buffers, which the target does not support (no storageBuffer16BitAccess)")
            lines.append("#extension GL_EXT_shader_16bit_storage : require")
        return lines


def _call_name(expr) -> str:
    return str(expr.op.name) if type(expr).__name__ == "Call" and hasattr(expr.op, "name") else ""


def kernel_to_glsl(name: str, func, target_attrs: dict) -> Shader:
    """GLSL for the lowered device kernel ``func`` (a PrimFunc with calling_conv 2)."""
    return GLSLWriter(name, func, target_attrs).write()
