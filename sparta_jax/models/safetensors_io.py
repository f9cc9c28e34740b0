"""Reading and writing .safetensors files as numpy arrays, bfloat16 included.

The format is an 8-byte little-endian header length, a JSON header mapping tensor names to
dtype, shape and byte offsets, then the raw bytes. Reading memory-maps the file, so a tensor
costs host memory only when it is touched, and a loader can hand each device just its shard.
"""
from __future__ import annotations

import json
import os
import struct
from typing import Iterable, Mapping

import ml_dtypes
import numpy as np

_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
    "BOOL": np.bool_,
}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}


class SafetensorsFile:
    """Lazy, memory-mapped view of one .safetensors file."""

    def __init__(self, path: str):
        self.path = path
        with open(path, "rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(header_len))
        self.metadata = header.pop("__metadata__", {}) or {}
        self._entries = header
        self._data_start = 8 + header_len
        self._mmap = np.memmap(path, dtype=np.uint8, mode="r")

    def keys(self) -> list[str]:
        return list(self._entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._entries[name]["shape"])

    def get(self, name: str) -> np.ndarray:
        entry = self._entries[name]
        dtype = entry["dtype"]
        if dtype not in _DTYPES:
            raise ValueError(f"{self.path}: tensor {name!r} has unsupported dtype {dtype}")
        start, end = entry["data_offsets"]
        raw = self._mmap[self._data_start + start: self._data_start + end]
        return raw.view(_DTYPES[dtype]).reshape(entry["shape"])


def save_file(tensors: Mapping[str, np.ndarray], path: str, metadata: Mapping[str, str] | None = None):
    """Write numpy arrays (any dtype in the table, bfloat16 included) to `path` atomically."""
    header: dict = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    arrays = {}
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name])
        if arr.dtype not in _NAMES:
            raise ValueError(f"tensor {name!r}: dtype {arr.dtype} cannot be stored in safetensors")
        header[name] = {"dtype": _NAMES[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
        arrays[name] = arr
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the format asks for 8-byte alignment of the data
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name in sorted(arrays):
            f.write(arrays[name].tobytes())
    os.replace(tmp, path)


class CheckpointShards:
    """All tensors of a HF checkpoint folder: one model.safetensors or an indexed set of shards."""

    def __init__(self, folder: str, index_name="model.safetensors.index.json",
                 single_name="model.safetensors"):
        index_path = os.path.join(folder, index_name)
        single_path = os.path.join(folder, single_name)
        if os.path.exists(index_path):
            with open(index_path) as f:
                weight_map = json.load(f)["weight_map"]
            files = {fn: SafetensorsFile(os.path.join(folder, fn)) for fn in sorted(set(weight_map.values()))}
            self._where = {name: files[fn] for name, fn in weight_map.items()}
        elif os.path.exists(single_path):
            single = SafetensorsFile(single_path)
            self._where = {name: single for name in single.keys()}
        else:
            raise FileNotFoundError(
                f"{folder}: no {single_name} or {index_name} (only safetensors checkpoints are read)"
            )
        self.folder = folder

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def keys(self) -> Iterable[str]:
        return self._where.keys()

    def shape(self, name: str) -> tuple[int, ...]:
        return self._where[name].shape(name)

    def get(self, name: str) -> np.ndarray:
        if name not in self._where:
            raise KeyError(f"{self.folder}: checkpoint has no tensor {name!r}")
        return self._where[name].get(name)
