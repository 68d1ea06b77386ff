"""PyTorch's checkpoint format (`torch.save`: a zip of `data.pkl` and one record per storage), read and written
with NumPy only.

Reading uses a restricted unpickler: the torch functions that rebuild tensors are replaced by NumPy versions,
and every class the pickle names outside the standard library and torch (the official `T_net`, `CAB`, ...,
`torch.nn.modules.*`) becomes an inert `ModuleRecord` that only stores the state it is given. Nothing named in
the file is imported or called, so whole pickled modules load without their classes, and a pickle that asks
for anything else (`os.system`, `builtins.eval`, `torch.load`) is refused.
"""
import collections
import io
import pickle
import sys
import zipfile
import zlib

import ml_dtypes
import numpy as np


class WeightsError(ValueError):
    """A checkpoint that cannot be read or does not fit the network; the message names the file and the key."""


STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
TORCH_DTYPES = {"float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool"}


class ModuleRecord:
    """Stands in for a pickled object of class `module.name` (an `nn.Module` in a checkpoint): keeps its state."""
    global_name = "?"

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __setstate__(self, state):
        self.state = state


class _RecordMeta(type):
    def __call__(cls, *args, **kwargs):
        # Calling a class (pickle's REDUCE) could run its constructor; a record is only ever created empty.
        raise pickle.UnpicklingError(f"refusing to call {cls.global_name}")


def _record_class(module, name):
    return _RecordMeta(name, (ModuleRecord,), {"global_name": f"{module}.{name}"})


class _StorageType:
    def __init__(self, name):
        self.dtype = np.dtype(STORAGE_DTYPES[name])


def _rebuild_tensor(storage, offset, size, stride, *unused):
    size, stride = tuple(size), tuple(stride)
    if not size:
        return np.array(storage[offset])
    extent = offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1
    if min(size) == 0:
        return np.zeros(size, storage.dtype)
    if extent > storage.size:
        raise pickle.UnpicklingError(f"a tensor of shape {size} needs {extent} elements, its storage has "
                                     f"{storage.size}")
    item = storage.itemsize
    return np.lib.stride_tricks.as_strided(storage[offset:], size, tuple(s * item for s in stride)).copy()


def _rebuild_parameter(data, *unused):
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("__builtin__", "set"): set,            # protocol 2 spells builtins the Python 2 way
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "frozenset"): frozenset,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "Size"): tuple,
    ("torch", "device"): str,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, data, load_storage):
        super().__init__(io.BytesIO(data))
        self._load_storage = load_storage

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        if module == "torch" and name in TORCH_DTYPES:
            return name
        top = module.split(".")[0]
        if (top == "torch" and not module.startswith("torch.nn.modules.")) or top in sys.stdlib_module_names \
                or top in ("numpy", "__builtin__") or not name.isidentifier():
            raise pickle.UnpicklingError(f"refusing the unexpected global {module}.{name}")
        return _record_class(module, name)

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        return self._load_storage(str(pid[2]), pid[1].dtype, pid[4])


def read(path):
    """The object `torch.save` wrote to `path` (zip format, torch >= 1.6), tensors as NumPy arrays and pickled
    classes as `ModuleRecord`s. Raises WeightsError naming the file (and the record) on anything unexpected."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise WeightsError(f"{path}: not a complete PyTorch zip checkpoint (truncated, or saved with the legacy "
                           f"format of torch < 1.6?): {e}") from e
    with archive:
        names = archive.namelist()
        pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise WeightsError(f"{path}: no data.pkl record; not a torch.save checkpoint")
        prefix = pkl[0][:-len("data.pkl")]
        big_endian = f"{prefix}byteorder" in names and archive.read(f"{prefix}byteorder").strip() == b"big"
        storages = {}

        def load_storage(key, dtype, numel):
            if key not in storages:
                record = f"{prefix}data/{key}"
                try:
                    raw = archive.read(record)
                except (KeyError, zipfile.BadZipFile, OSError) as e:
                    raise pickle.UnpicklingError(f"storage record {record}: {e}") from e
                if len(raw) != numel * dtype.itemsize:
                    raise pickle.UnpicklingError(f"storage record {record} has {len(raw)} bytes, expected "
                                                 f"{numel} x {dtype.itemsize}")
                storages[key] = np.frombuffer(raw, dtype.newbyteorder(">" if big_endian else "<")).astype(dtype)
            return storages[key]

        try:
            return _Unpickler(archive.read(pkl[0]), load_storage).load()
        except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, zlib.error, ValueError, TypeError,
                AttributeError, IndexError, KeyError) as e:
            raise WeightsError(f"{path}: {e}") from e


def state_dict_of(record, prefix=""):
    """{key: array} of a pickled module as `state_dict()` lists it: parameters, buffers, then children; a module
    shared by several parents (MPRNet's PReLU) appears under each of its paths."""
    state = getattr(record, "state", None)
    if not isinstance(state, dict) or "_modules" not in state:
        raise WeightsError(f"{prefix or 'the checkpoint'}: pickled object {type(record).__name__} is not a module")
    out = {}
    non_persistent = state.get("_non_persistent_buffers_set") or set()
    for group in ("_parameters", "_buffers"):
        for name, value in (state.get(group) or {}).items():
            if value is not None and not (group == "_buffers" and name in non_persistent):
                out[prefix + name] = value
    for name, child in state["_modules"].items():
        if child is not None:
            out.update(state_dict_of(child, f"{prefix}{name}."))
    return out


# --- writing ------------------------------------------------------------------------------------------------

class _Global:
    """A reference to a global by name, pickled as GLOBAL without importing it."""

    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self, *args):
        raise TypeError("a pickled reference only")


class _Storage:
    def __init__(self, key, array):
        self.key, self.array = key, array


class _Tensor:
    def __init__(self, storage):
        self.storage = storage

    def __reduce__(self):
        shape = self.storage.array.shape
        stride = tuple(int(np.prod(shape[i + 1:])) for i in range(len(shape)))
        return (_Global("torch._utils", "_rebuild_tensor_v2"),
                (self.storage, 0, shape, stride, False, _OrderedDict()))


class _OrderedDict(dict):
    def __reduce__(self):
        return _Global("collections", "OrderedDict"), (), None, None, iter(self.items())


_STORAGE_NAMES = {np.dtype(v): k for k, v in STORAGE_DTYPES.items()}


class _Pickler(pickle._Pickler):   # the pure-Python pickler: GLOBALs can be written without an import
    dispatch = pickle._Pickler.dispatch.copy()

    def _save_global(self, obj):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())

    dispatch[_Global] = _save_global

    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", _Global("torch", _STORAGE_NAMES[obj.array.dtype]), obj.key, "cpu", obj.array.size)
        return None


def write(path, state_dict):
    """Writes {key: array} as `torch.save(OrderedDict)` would: loads with `torch.load` (also `weights_only`)."""
    storages = [_Storage(str(i), np.array(v, order="C")) for i, v in enumerate(state_dict.values())]
    tensors = _OrderedDict((k, _Tensor(s)) for k, s in zip(state_dict, storages))
    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump(tensors)
    prefix = "archive/"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(prefix + "data.pkl", buf.getvalue())
        z.writestr(prefix + "byteorder", "little")
        for s in storages:
            z.writestr(f"{prefix}data/{s.key}", s.array.astype(s.array.dtype.newbyteorder("<")).tobytes())
        z.writestr(prefix + "version", "3\n")
