"""A tiny run for tests: 3 members, 6 instructions, 2 iterations, short answers."""
from sparta_jax.config_files import sibling_config


def get_config():
    c = sibling_config(__file__, "base")
    c.mode = "faithful"  # the tests exercise the released code's rules
    c.instructions_per_iteration = 6
    c.tribe.members = 3
    c.tribe.lora_rank = 4
    c.tribe.lora_alpha = 8.0
    c.data.train, c.data.dev, c.data.test = 30, 10, 10
    c.generation.max_new_tokens = 12
    c.generation.batch_size = 8
    c.judge.batch_size = 8
    c.judge.max_new_tokens = 12
    c.dpo.pairs_per_step = 2
    c.dpo.epochs = 1
    c.dpo.max_length = 128
    c.dpo.max_prompt_length = 112
    c.dpo.learning_rate = 1e-3
    c.sampler.new_token_buckets = (16, 32, 64, 128, 256)
    c.evaluation.dev, c.evaluation.test, c.evaluation.max_new_tokens = 4, 4, 8
    c.report_every = 0  # the report once, at the end: its plots cost a tiny run as much as an iteration
    return c
