"""Preference records -> DPO token rows, with the embedded SmolLM2 tokenizer (EOS == pad)."""
from __future__ import annotations

import pytest
import transformers

from sparta_jax.preference_batches import encode_preferences, pairs_to_batch, prompt_ids, response_ids, truncate

SYSTEM = "You are a helpful AI assistant."


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir):
    return transformers.AutoTokenizer.from_pretrained(smollm2_dir)


@pytest.mark.reference
def test_fixed_prompt_is_the_generation_prompt_and_ends_with_eos(tokenizer):
    generation = tokenizer.apply_chat_template(
        [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "What is 2+2?"}],
        tokenize=False, add_generation_prompt=True)
    assert prompt_ids(tokenizer, "What is 2+2?", mode="fixed", system_prompt=SYSTEM) == tokenizer.encode(
        generation, add_special_tokens=False)
    ids = response_ids(tokenizer, "4", mode="fixed")
    assert ids[-1] == tokenizer.eos_token_id == tokenizer.pad_token_id  # SmolLM2: EOS is the pad token
    assert tokenizer.decode(ids[:-1]) == "4"


@pytest.mark.reference
def test_faithful_reproduces_the_released_formatting(tokenizer):
    p = tokenizer.decode(prompt_ids(tokenizer, "What is 2+2?", mode="faithful", system_prompt=SYSTEM))
    assert SYSTEM not in p and "named SmolLM" in p  # the template's own default system prompt
    r = response_ids(tokenizer, "4", mode="faithful")
    assert tokenizer.decode(r) == "Assistant: 4</s>"
    assert tokenizer.eos_token_id not in r  # a literal "</s>", not the model's EOS


@pytest.mark.reference
def test_masks_come_from_lengths_so_a_final_eos_counts(tokenizer):
    triples, dropped = encode_preferences(
        tokenizer, [{"instruction": "Say hi.", "chosen": "Hi!", "rejected": "No."}], mode="fixed", system_prompt=SYSTEM)
    assert dropped == []
    batch = pairs_to_batch(triples, length=64, pad_id=tokenizer.pad_token_id)
    p, c, r = triples[0]
    for j, completion in enumerate((c, r)):
        n = len(p) + len(completion)
        assert batch.mask[0, j].sum() == n
        assert batch.ids[0, j, n - 1] == tokenizer.eos_token_id and batch.mask[0, j, n - 1]  # EOS kept ...
        assert not batch.mask[0, j, n:].any() and (batch.ids[0, j, n:] == tokenizer.pad_token_id).all()  # pads not
        assert batch.response_mask[0, j].sum() == len(completion)
        assert not batch.response_mask[0, j, : len(p)].any()


def test_truncation_keeps_prompt_end_and_response_start():
    prompt, response = list(range(100, 400)), list(range(1000, 1400))
    p, r = truncate(prompt, response, max_prompt_length=256, max_length=512)
    assert p == prompt[-256:] and r == response[:256] and len(p) + len(r) == 512
    p, r = truncate(prompt[:10], response, max_prompt_length=256, max_length=512)
    assert p == prompt[:10] and r == response[:400]


@pytest.mark.reference
def test_pairs_without_room_for_a_response_are_dropped(tokenizer):
    long = "word " * 600
    triples, dropped = encode_preferences(
        tokenizer, [{"instruction": long, "chosen": "a", "rejected": "b"}, {"instruction": "q", "chosen": "a", "rejected": "b"}],
        mode="fixed", system_prompt=SYSTEM, max_prompt_length=0, max_length=128)
    assert dropped == [0] and len(triples) == 1
    with pytest.raises(ValueError, match="exceed the batch length"):
        pairs_to_batch([(list(range(10)), [1, 2], [3])], length=11)
    with pytest.raises(ValueError, match="mode must be"):
        response_ids(tokenizer, "x", mode="released")
