"""A JAX function of one image batch -> an ONNX model, by translating its jaxpr primitive by primitive.

Written here rather than taken from jax2onnx: jax2onnx 0.17.1 pins orbax-checkpoint<0.11.37 (this project runs
0.12), installs equinox, dm-pix, huggingface-hub, netron and orbax-export with it, and its `concatenate` drops
symbolic sizes (it cannot trace the MPRNet map at symbolic sizes). The primitives of both restoring maps (MPRNet and
Restormer) are few; each maps onto one or a few ONNX operators (opset 18). The batch axis stays dynamic (ONNX
dimension `batch`); so do height and width where the input's shape leaves them symbolic (`16*h`: ONNX dimensions
`height`, `width`), and every size derived from them (`4*h - 1`, `256*h*w`) is computed from the input's shape at
run time. A primitive with no translation is an error naming it and the layer (flax module path) it is in.

    model = convert(lambda x: restoring(t_model, params, x), (1, 256, 256, 3))
    model = convert(..., jax.export.symbolic_shape("b, 16*h, 16*w, 3"))
"""
import re

import jax
import jax.numpy as jnp
import numpy as np
import onnx
from jax import export
from jax.extend import core as jax_core
from onnx import TensorProto, helper, numpy_helper

from rcot_jax.inference import ONNX_DIGEST, digest

OPSET = 18
INPUT, OUTPUT, BATCH = "image", "restored", "batch"


class UnsupportedPrimitive(NotImplementedError):
    pass


def _onnx_dtype(dtype):
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


class _Graph:
    """The nodes and constants of the model being built; names are unique and carry the layer they come from."""

    def __init__(self):
        self.nodes, self.initializers, self._count = [], [], 0

    def name(self, hint):
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, value, dtype=None):
        arr = np.asarray(value, dtype)
        name = self.name("const")
        self.initializers.append(numpy_helper.from_array(arr, name))
        return name

    def op(self, op_type, inputs, layer="", outputs=1, **attrs):
        outs = [self.name(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=self.name(f"{layer}/{op_type}"),
                                           **attrs))
        return outs if outputs > 1 else outs[0]


_TERM = re.compile(r"([+-]?)\s*([^+-]+)")


class _Converter:
    def __init__(self, graph, symbols):
        self.g = graph
        self.symbols = symbols      # {dimension variable: its runtime value, a 1-element int64 tensor's name}

    def dim(self, d, layer):
        """A 1-element int64 tensor holding the size `d`: an int, or a symbolic size (a sum of products of integers
        and dimension variables, e.g. `4*h - 1`, `256*h*w`) computed from the input's shape at run time."""
        if isinstance(d, int):
            return self.g.const([d], np.int64)
        total = None
        for sign, term in _TERM.findall(str(d).replace(" ", "")):
            k, value = -1 if sign == "-" else 1, None
            for factor in term.split("*"):
                if factor.isdigit():
                    k *= int(factor)
                elif factor in self.symbols:
                    value = self.symbols[factor] if value is None else self.g.op("Mul", [value, self.symbols[factor]],
                                                                                 layer)
                else:
                    raise UnsupportedPrimitive(f"the size {d} in layer {layer}: '{factor}' is not a dimension "
                                               f"variable of the input ({', '.join(self.symbols)})")
            term = self.g.const([k], np.int64) if value is None else \
                value if k == 1 else self.g.op("Mul", [value, self.g.const([k], np.int64)], layer)
            total = term if total is None else self.g.op("Add", [total, term], layer)
        return total

    def shape(self, dims, layer):
        """A 1-D int64 tensor of the sizes `dims` (see `dim`)."""
        if all(isinstance(d, int) for d in dims):
            return self.g.const(list(dims), np.int64)
        return self.g.op("Concat", [self.dim(d, layer) for d in dims], layer, axis=0)

    def run(self, jaxpr, consts, inputs):
        """Translates `jaxpr` (consts, inputs: ONNX names of its constvars and invars); returns its outputs' names."""
        env = dict(zip(jaxpr.constvars, consts))
        env.update(zip(jaxpr.invars, inputs))

        def read(v):
            if isinstance(v, jax_core.Literal):
                return self.g.const(v.val, v.aval.dtype)
            return env[v]
        for eqn in jaxpr.eqns:
            layer = str(eqn.source_info.name_stack) or "top level"
            rule = RULES.get(eqn.primitive.name)
            if rule is None:
                raise UnsupportedPrimitive(f"no ONNX translation for the primitive '{eqn.primitive.name}' in layer "
                                           f"{layer}{_where(eqn)}; export with --format=stablehlo instead")
            outs = rule(self, [read(v) for v in eqn.invars], eqn, layer)
            outs = outs if isinstance(outs, list) else [outs]
            env.update(zip(eqn.outvars, outs))
        return [read(v) for v in jaxpr.outvars]


def _where(eqn):
    """' (file:line (function))' of the user code that made `eqn`, where this JAX version tells."""
    try:
        where = jax._src.source_info_util.summarize(eqn.source_info)
    except Exception:   # noqa: BLE001 - a private helper; the layer alone still names the place
        where = ""
    return f" ({where})" if where else ""


def _inner(key):
    """A call of an inner jaxpr (closed or open) in `eqn.params[key]`: its equations, inlined."""
    def rule(c, ins, eqn, layer):
        inner = eqn.params[key]
        consts = getattr(inner, "consts", [])
        return c.run(getattr(inner, "jaxpr", inner), [c.g.const(np.asarray(k)) for k in consts], ins)
    return rule


def _elementwise(op_type):
    return lambda c, ins, eqn, layer: c.g.op(op_type, ins, layer)


def _reduce(op_type):
    def rule(c, ins, eqn, layer):
        return c.g.op(op_type, [ins[0], c.g.const(list(eqn.params["axes"]), np.int64)], layer, keepdims=0)
    return rule


def _integer_pow(c, ins, eqn, layer):
    y = eqn.params["y"]
    if y == 2:
        return c.g.op("Mul", [ins[0], ins[0]], layer)
    return c.g.op("Pow", [ins[0], c.g.const(y, eqn.invars[0].aval.dtype)], layer)


def _erfc(c, ins, eqn, layer):
    one = c.g.const(1, eqn.invars[0].aval.dtype)
    return c.g.op("Sub", [one, c.g.op("Erf", ins, layer)], layer)


def _select_n(c, ins, eqn, layer):
    if len(ins) != 3 or eqn.invars[0].aval.dtype != jnp.bool_:
        raise UnsupportedPrimitive(f"select_n with {len(ins) - 1} cases or an integer selector, in layer {layer}")
    return c.g.op("Where", [ins[0], ins[2], ins[1]], layer)


def _convert(c, ins, eqn, layer):
    return c.g.op("Cast", ins, layer, to=_onnx_dtype(eqn.params["new_dtype"]))


def _broadcast_in_dim(c, ins, eqn, layer):
    shape, dims = eqn.params["shape"], eqn.params["broadcast_dimensions"]
    x = ins[0]
    missing = [i for i in range(len(shape)) if i not in dims]
    if missing:
        x = c.g.op("Unsqueeze", [x, c.g.const(missing, np.int64)], layer)
    operand = eqn.invars[0].aval.shape
    # Expand broadcasts both ways: 1 keeps a size the operand already has (a symbolic batch included).
    target = [1 if i in dims and operand[dims.index(i)] != 1 else d for i, d in enumerate(shape)]
    return c.g.op("Expand", [x, c.shape(target, layer)], layer)


def _reshape(c, ins, eqn, layer):
    if eqn.params.get("dimensions") is not None:
        raise UnsupportedPrimitive(f"reshape with a dimension order, in layer {layer}")
    return c.g.op("Reshape", [ins[0], c.shape(eqn.params["new_sizes"], layer)], layer)


def _squeeze(c, ins, eqn, layer):
    return c.g.op("Squeeze", [ins[0], c.g.const(list(eqn.params["dimensions"]), np.int64)], layer)


def _transpose(c, ins, eqn, layer):
    return c.g.op("Transpose", ins, layer, perm=list(eqn.params["permutation"]))


def _slice(c, ins, eqn, layer):
    shape = eqn.invars[0].aval.shape
    starts, limits = eqn.params["start_indices"], eqn.params["limit_indices"]
    strides = eqn.params["strides"] or (1,) * len(shape)
    axes = [i for i in range(len(shape)) if (starts[i], limits[i], strides[i]) != (0, shape[i], 1)]
    if not axes:
        return c.g.op("Identity", ins, layer)
    return c.g.op("Slice", [ins[0], c.shape([starts[i] for i in axes], layer),
                            c.shape([limits[i] for i in axes], layer), c.g.const(axes, np.int64),
                            c.g.const([strides[i] for i in axes], np.int64)], layer)


def _dim_as_value(c, ins, eqn, layer):
    value = c.g.op("Squeeze", [c.dim(eqn.params["dim"], layer), c.g.const([0], np.int64)], layer)
    return c.g.op("Cast", [value], layer, to=_onnx_dtype(eqn.outvars[0].aval.dtype))


def _concatenate(c, ins, eqn, layer):
    return c.g.op("Concat", ins, layer, axis=eqn.params["dimension"])


def _stack(c, ins, eqn, layer):
    axis = c.g.const([eqn.params["axis"]], np.int64)
    return c.g.op("Concat", [c.g.op("Unsqueeze", [x, axis], layer) for x in ins], layer, axis=eqn.params["axis"])


def _split(c, ins, eqn, layer):
    sizes = eqn.params["sizes"]
    return c.g.op("Split", [ins[0], c.g.const(list(sizes), np.int64)], layer, outputs=len(sizes),
                  axis=eqn.params["axis"])


def _dot_general(c, ins, eqn, layer):
    """As an Einsum: the batch axes, then the left operand's free axes, then the right's (JAX's order)."""
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    nl, nr = (len(v.aval.shape) for v in eqn.invars)
    letters = iter("abcdefghijklmnopqrstuvwxyz")
    left = [next(letters) for _ in range(nl)]
    right = [None] * nr
    for i, j in zip(lc + lb, rc + rb):
        right[j] = left[i]
    right = [r or next(letters) for r in right]
    out = [left[i] for i in lb] + [left[i] for i in range(nl) if i not in lc + lb] + \
        [right[j] for j in range(nr) if j not in rc + rb]
    y = c.g.op("Einsum", ins, layer, equation=f"{''.join(left)},{''.join(right)}->{''.join(out)}")
    return _cast_to(c, y, eqn, layer)


def _cast_to(c, y, eqn, layer):
    out_dtype, in_dtype = eqn.outvars[0].aval.dtype, eqn.invars[0].aval.dtype
    return y if out_dtype == in_dtype else c.g.op("Cast", [y], layer, to=_onnx_dtype(out_dtype))


def _conv(c, ins, eqn, layer):
    """ONNX's Conv is NCHW x OIHW: transposes in and out by the dimension numbers (onnxruntime folds the kernel's)."""
    p = eqn.params
    if any(d != 1 for d in p["lhs_dilation"]) or p["batch_group_count"] != 1:
        raise UnsupportedPrimitive(f"a transposed or batch-grouped convolution, in layer {layer}")
    lhs, rhs, out = p["dimension_numbers"]
    x = c.g.op("Transpose", [ins[0]], layer, perm=list(lhs))
    w = c.g.op("Transpose", [ins[1]], layer, perm=list(rhs))
    pads = [lo for lo, _ in p["padding"]] + [hi for _, hi in p["padding"]]
    y = c.g.op("Conv", [x, w], layer, strides=list(p["window_strides"]), pads=pads,
               dilations=list(p["rhs_dilation"]), group=p["feature_group_count"])
    y = c.g.op("Transpose", [y], layer, perm=list(np.argsort(out)))
    return _cast_to(c, y, eqn, layer)


RULES = {      # the primitives of both maps' jaxprs, at fixed and symbolic sizes, remat or not (JAX 0.10 and 0.12)
    "add": _elementwise("Add"), "sub": _elementwise("Sub"), "mul": _elementwise("Mul"), "div": _elementwise("Div"),
    "max": _elementwise("Max"), "min": _elementwise("Min"), "neg": _elementwise("Neg"), "exp": _elementwise("Exp"),
    "sqrt": _elementwise("Sqrt"), "logistic": _elementwise("Sigmoid"), "erfc": _erfc,
    "ge": _elementwise("GreaterOrEqual"), "integer_pow": _integer_pow, "select_n": _select_n,
    "convert_element_type": _convert,
    "copy": _elementwise("Identity"), "stop_gradient": _elementwise("Identity"),
    "name": lambda c, ins, eqn, layer: ins[0],      # checkpoint_name (a remat policy's label): the value itself
    "reduce_sum": _reduce("ReduceSum"), "reduce_max": _reduce("ReduceMax"),
    "broadcast_in_dim": _broadcast_in_dim, "reshape": _reshape, "squeeze": _squeeze, "transpose": _transpose,
    "slice": _slice, "dim_as_value": _dim_as_value, "concatenate": _concatenate, "stack": _stack, "split": _split,
    "dot_general": _dot_general, "conv_general_dilated": _conv,
    "jit": _inner("jaxpr"), "remat2": _inner("jaxpr"), "custom_jvp_call": _inner("call_jaxpr"),
}


def convert(fn, shape, name="rcot_jax"):
    """ONNX ModelProto of `fn` (float32 [B, H, W, C] -> one array) for inputs of `shape`: integer sizes, or symbolic
    ones (`jax.export.symbolic_shape`, each `k*var`) that stay dynamic in the model. The batch is dynamic whatever
    `shape` says. Constants `fn` closes over (the parameters) become initializers."""
    batch, = export.symbolic_shape("b")
    spec = jax.ShapeDtypeStruct((shape[0] if not isinstance(shape[0], int) else batch, *shape[1:]), jnp.float32)
    closed = jax.make_jaxpr(fn)(spec)
    g = _Graph()
    names, symbols = [], {}
    for axis, d in enumerate(spec.shape):      # each dimension variable solved from the input's shape at run time
        if isinstance(d, int):
            names.append(d)
            continue
        k, var = (str(d).split("*") if "*" in str(d) else ("1", str(d)))
        size = g.op("Shape", [INPUT], "input", start=axis, end=axis + 1)
        symbols[var] = size if k == "1" else g.op("Div", [size, g.const([int(k)], np.int64)], "input")
        names.append({0: BATCH, 1: "height", 2: "width"}.get(axis, var))
    out, = _Converter(g, symbols).run(closed.jaxpr, [g.const(np.asarray(k)) for k in closed.consts], [INPUT])
    g.nodes.append(helper.make_node("Identity", [out], [OUTPUT], name="output"))
    out_aval = closed.out_avals[0]
    out_names = names if tuple(out_aval.shape) == spec.shape else [d if isinstance(d, int) else str(d)
                                                                    for d in out_aval.shape]
    graph = helper.make_graph(
        g.nodes, name,
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, names)],
        [helper.make_tensor_value_info(OUTPUT, _onnx_dtype(out_aval.dtype), out_names)],
        g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="rcot_jax")
    helper.set_model_props(model, {ONNX_DIGEST: digest(graph.SerializeToString())})   # checked by load_exported
    onnx.checker.check_model(model, full_check=False)
    return model
