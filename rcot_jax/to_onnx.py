"""A JAX function of one image batch -> an ONNX model, by translating its jaxpr primitive by primitive.

Written here rather than taken from jax2onnx: jax2onnx 0.17.1 pins orbax-checkpoint<0.11.37 (this project runs
0.12) and installs equinox, dm-pix, huggingface-hub, netron and orbax-export with it, and its `concatenate` drops
symbolic sizes. The primitives of both restoring maps (MPRNet and Restormer) are few; each maps onto one or a few
ONNX operators (opset 18). The batch axis stays dynamic (ONNX dimension `batch`); height and width are those of the
example input. A primitive with no translation is an error naming it and the layer (flax module path) it is in.

    model = convert(lambda x: restoring(t_model, params, x), (1, 256, 256, 3))
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


_BATCH_DIM = re.compile(r"^(?:(\d+)\*)?b$")


class _Converter:
    def __init__(self, graph, batch_size):
        self.g = graph
        self.batch = batch_size     # the runtime batch as a 1-element int64 tensor's name

    def shape(self, dims, layer):
        """A 1-D int64 tensor of `dims`, where a symbolic dim (k*b) is computed from the input's batch."""
        parts = []
        for d in dims:
            if isinstance(d, int):
                parts.append(self.g.const([d], np.int64))
                continue
            m = _BATCH_DIM.match(str(d).replace(" ", ""))
            if not m:
                raise UnsupportedPrimitive(f"a size {d} that is not a multiple of the batch, in layer {layer}")
            parts.append(self.g.op("Mul", [self.batch, self.g.const([int(m.group(1) or 1)], np.int64)], layer)
                         if m.group(1) else self.batch)
        return parts[0] if len(parts) == 1 else self.g.op("Concat", parts, layer, axis=0)

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
                where = jax._src.source_info_util.summarize(eqn.source_info)
                raise UnsupportedPrimitive(f"no ONNX translation for the primitive '{eqn.primitive.name}' in layer "
                                           f"{layer} ({where}); export with --format=stablehlo instead")
            outs = rule(self, [read(v) for v in eqn.invars], eqn, layer)
            outs = outs if isinstance(outs, list) else [outs]
            env.update(zip(eqn.outvars, outs))
        return [read(v) for v in jaxpr.outvars]


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
    if any(not isinstance(v, int) for i in axes for v in (starts[i], limits[i])):
        raise UnsupportedPrimitive(f"a slice of a symbolic axis, in layer {layer}")
    if not axes:
        return c.g.op("Identity", ins, layer)
    return c.g.op("Slice", [ins[0], *(c.g.const([seq[i] for i in axes], np.int64) for seq in
                                      (starts, limits, range(len(shape)), strides))], layer)


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


RULES = {
    "add": _elementwise("Add"), "sub": _elementwise("Sub"), "mul": _elementwise("Mul"), "div": _elementwise("Div"),
    "max": _elementwise("Max"), "min": _elementwise("Min"), "neg": _elementwise("Neg"), "exp": _elementwise("Exp"),
    "sqrt": _elementwise("Sqrt"), "rsqrt": lambda c, ins, eqn, layer: c.g.op("Reciprocal", [c.g.op(
        "Sqrt", ins, layer)], layer), "tanh": _elementwise("Tanh"), "logistic": _elementwise("Sigmoid"),
    "erf": _elementwise("Erf"), "erfc": _erfc, "ge": _elementwise("GreaterOrEqual"), "gt": _elementwise("Greater"),
    "integer_pow": _integer_pow, "select_n": _select_n, "convert_element_type": _convert,
    "copy": _elementwise("Identity"), "stop_gradient": _elementwise("Identity"),
    "reduce_sum": _reduce("ReduceSum"), "reduce_max": _reduce("ReduceMax"),
    "broadcast_in_dim": _broadcast_in_dim, "reshape": _reshape, "squeeze": _squeeze, "transpose": _transpose,
    "slice": _slice, "concatenate": _concatenate, "stack": _stack, "split": _split, "dot_general": _dot_general,
    "conv_general_dilated": _conv,
    "jit": _inner("jaxpr"), "remat2": _inner("jaxpr"), "custom_jvp_call": _inner("call_jaxpr"),
}


def convert(fn, shape, name="rcot_jax"):
    """ONNX ModelProto of `fn` (float32 [B, H, W, C] -> one array) for inputs of `shape` (its first size is only an
    example: the batch stays dynamic). Constants `fn` closes over (the parameters) become initializers."""
    spec = jax.ShapeDtypeStruct(export.symbolic_shape("b") + tuple(shape[1:]), jnp.float32)
    closed = jax.make_jaxpr(fn)(spec)
    g = _Graph()
    batch = g.op("Shape", [INPUT], "input", start=0, end=1)
    c = _Converter(g, batch)
    out, = c.run(closed.jaxpr, [g.const(np.asarray(k)) for k in closed.consts], [INPUT])
    g.nodes.append(helper.make_node("Identity", [out], [OUTPUT], name="output"))
    out_aval = closed.out_avals[0]
    graph = helper.make_graph(
        g.nodes, name,
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [BATCH, *shape[1:]])],
        [helper.make_tensor_value_info(OUTPUT, _onnx_dtype(out_aval.dtype), [BATCH, *out_aval.shape[1:]])],
        g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="rcot_jax")
    helper.set_model_props(model, {ONNX_DIGEST: digest(graph.SerializeToString())})   # checked by load_exported
    onnx.checker.check_model(model, full_check=False)
    return model
