"""Checks a run config before anything heavy starts; errors name the offending key."""
from __future__ import annotations

from sparta_jax.errors import ConfigError  # noqa: F401  (raised here; importers may take it from here)


def _get(config, dotted: str):
    node = config
    for part in dotted.split("."):
        try:
            node = node[part]
        except (KeyError, TypeError, AttributeError):
            raise ConfigError(f"config key {dotted!r} is missing") from None
    return node


def _check(config, key: str, ok, expectation: str):
    value = _get(config, key)
    try:
        good = ok(value)
    except (TypeError, ValueError):
        good = False
    if not good:
        raise ConfigError(f"config.{key} = {value!r}: {expectation}")


def _check_tribe(config) -> None:
    """The fields of config["tribe"] (a one-group tribe, or one group of tribe.groups)."""
    _check(config, "tribe.base", lambda v: isinstance(v, str) and v, "must name a model folder or 'embedded'")
    _check(config, "tribe.kind", lambda v: v in ("lora", "full"),
           "must be 'lora' (adapters over one frozen base) or 'full' (whole models, all weights trained)")
    if config["tribe"]["kind"] == "full":
        _check(config, "tribe.adapters", lambda v: not any(v),
               "must be empty when tribe.kind='full' (the members are tribe.member_folders)")
    _check(config, "tribe.dtype", lambda v: v in ("float32", "bfloat16", "float16"), "must be float32, bfloat16 or float16")
    _check(config, "tribe.param_dtype", lambda v: v in ("float32", "bfloat16", "float16"),
           "must be float32, bfloat16 or float16")
    _check(config, "tribe.lora_rank", lambda v: isinstance(v, int) and v >= 1, "must be an integer >= 1")


def _check_method(config, method: str) -> None:
    """A baseline's own settings (config.methods[method])."""
    cfg = config.methods[method]
    need_two = ("samples", "judgments") if method == "meta_rewarding" else ("samples",)  # a pair, a battle
    for key in [k for k in need_two if k in cfg]:
        _check(config, f"methods.{method}.{key}", lambda v: isinstance(v, int) and v >= 2,
               "must be an integer >= 2 (a pair needs two)")
    if method == "self_rewarding":
        _check(config, "methods.self_rewarding.judgments", lambda v: isinstance(v, int) and v >= 1,
               "must be an integer >= 1")
        _check(config, "methods.self_rewarding.prompt", lambda v: v in ("rubric", "sparta"),
               "must be 'rubric' (Yuan et al.'s additive 5-point judge) or 'sparta' (the 1-10 judge prompt)")
    if method == "meta_rewarding":
        _check(config, "methods.meta_rewarding.length_tier", lambda v: 0.0 <= v < 0.5,
               "must be in [0, 0.5) (the length control's quality tier rho; 0 = top and bottom scores only)")


def validate_config(config) -> None:
    positive = lambda v: v > 0  # noqa: E731
    prob = lambda v: 0.0 <= v <= 1.0  # noqa: E731
    _check(config, "mode", lambda v: v in ("faithful", "fixed"), "must be 'faithful' or 'fixed'")
    if "method" in config:
        from sparta_jax.methods import METHODS

        _check(config, "method", lambda v: v in METHODS, f"must be one of {', '.join(METHODS)}")
        if config.method != "sparta":
            _check_method(config, config.method)
    _check(config, "iterations", lambda v: isinstance(v, int) and v >= 1, "must be an integer >= 1")
    _check(config, "instructions_per_iteration", lambda v: isinstance(v, int) and v >= 1, "must be an integer >= 1")
    _check(config, "seed", lambda v: isinstance(v, int), "must be an integer")
    if "report_every" in config:
        _check(config, "report_every", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= -1,
               "must be an integer >= -1 (0: the report after the last iteration only; -1: no report)")
    if config.tribe.get("groups"):  # a mixed-base tribe: each group checked as a tribe of its own
        from sparta_jax.tribe import group_configs

        _check(config, "experts.enabled", lambda v: not v,
               "must be False with tribe.groups (the experts adapt one base; give each group its adapters)")
        for name, group in group_configs(config.tribe):
            try:
                _check_tribe({"tribe": group})
            except ConfigError as e:
                raise ConfigError(f"tribe.groups, group {name!r}: {e}") from None
    else:
        _check_tribe(config)
    if config.tribe.kind == "full":
        _check(config, "experts.enabled", lambda v: not v, "must be False when tribe.kind='full' (experts are LoRA)")
    _check(config, "matchmaking.alpha", prob, "must lie in [0, 1]")
    _check(config, "matchmaking.k", lambda v: isinstance(v, int) and v >= 1, "must be an integer >= 1")
    for section in ("generation", "judge"):
        _check(config, f"{section}.temperature", lambda v: v >= 0, "must be >= 0 (0 is greedy)")
        _check(config, f"{section}.top_k", lambda v: isinstance(v, int) and v >= 0, "must be an integer >= 0")
        _check(config, f"{section}.top_p", lambda v: 0.0 < v <= 1.0, "must lie in (0, 1]")
        _check(config, f"{section}.max_new_tokens", lambda v: isinstance(v, int) and v >= 1, "must be an integer >= 1")
        _check(config, f"{section}.max_prompt_tokens", lambda v: isinstance(v, int) and v >= 1, "must be an integer >= 1")
        _check(config, f"{section}.batch_size", lambda v: isinstance(v, int) and v >= 1, "must be an integer >= 1")
        _check(config, f"{section}.top_k", lambda v: config.sampler.candidates is None or v <= config.sampler.candidates,
               f"must not exceed sampler.candidates ({config.sampler.candidates})")
        _check(config, f"{section}.max_new_tokens", lambda v: v <= max(config.sampler.new_token_buckets),
               f"must fit the largest sampler.new_token_buckets entry ({max(config.sampler.new_token_buckets)})")
        _check(config, f"{section}.max_prompt_tokens", lambda v: v <= max(config.sampler.prompt_buckets),
               f"must fit the largest sampler.prompt_buckets entry ({max(config.sampler.prompt_buckets)})")
    if "refill_rows" in config.sampler:  # configs written before the refill have static batches
        _check(config, "sampler.refill_rows", lambda v: isinstance(v, int) and v >= 0,
               "must be an integer >= 0 (0: static batches; else how many finished rows are refilled together)")
        _check(config, "sampler.queue_batches", lambda v: isinstance(v, int) and v >= 1, "must be an integer >= 1")
    if "slice_layers" in config.sampler:
        from sparta_jax.sampling import SLICE_LAYERS

        _check(config, "sampler.slice_layers", lambda v: v in SLICE_LAYERS,
               "must be 'per_call' (decode weights sliced once per generate call) or 'per_step' (each step slices)")
    if "partition_decode" in config.sampler:
        _check(config, "sampler.partition_decode", lambda v: isinstance(v, bool),
               "must be True (decode steps partitioned by hand where the mesh splits the model) or False")
    if "decode_kernels" in config.sampler:
        from sparta_jax.models.decode_partitioned import KERNELS

        _check(config, "sampler.decode_kernels", lambda v: v in KERNELS,
               "must be 'xla', 'pallas' (Pallas kernels for the partitioned decode step on TPU) or 'interpret'")
    _check(config, "judge.mode", lambda v: v in ("sampled", "logits", "verifier"),
           "must be 'sampled', 'logits' or 'verifier' (a control: the task's answer checker in place of judges)")
    _check(config, "reputation.scheme", lambda v: v in ("normal", "static", "dynamic", "uniform"),
           "must be 'normal', 'static', 'dynamic' or 'uniform' (judges unweighted: an ablation)")
    _check(config, "dpo.beta", positive, "must be > 0")
    _check(config, "dpo.loss_type", lambda v: v in ("sigmoid", "ipo", "hinge", "sppo"), "must be sigmoid, ipo, hinge or sppo")
    _check(config, "dpo.sft_weight", lambda v: isinstance(v, (int, float)) and v >= 0, "must be a number >= 0")
    _check(config, "dpo.min_margin", lambda v: isinstance(v, (int, float)) and v >= 0, "must be a number >= 0")
    _check(config, "dpo.replay_iterations", lambda v: isinstance(v, int) and v >= 0, "must be an integer >= 0")
    if "best_member_lr_scale" in config.dpo:
        _check(config, "dpo.best_member_lr_scale", lambda v: isinstance(v, (int, float)) and v >= 0,
               "must be a number >= 0 (1: every member at dpo.learning_rate; 0: the best member is not trained)")
        if config.dpo.best_member_lr_scale != 1 and not config.evaluation.enabled:
            raise ConfigError("config.dpo.best_member_lr_scale needs evaluation.enabled: the best member is the "
                              "best by dev accuracy at the last evaluation")
    _check(config, "dpo.learning_rate", positive, "must be > 0")
    if "remat" in config.dpo:
        from sparta_jax.models.llama import REMAT_MODES

        _check(config, "dpo.remat", lambda v: isinstance(v, bool) or v in REMAT_MODES,
               "must be 'none', 'full' (each layer recomputed) or 'dots' (the projections' outputs kept)")
    _check(config, "dpo.lr_schedule", lambda v: v in ("cosine", "constant"), "must be 'cosine' or 'constant'")
    _check(config, "dpo.warmup_ratio", prob, "must lie in [0, 1]")
    _check(config, "dpo.pairs_per_step", lambda v: isinstance(v, int) and v >= 1, "must be an integer >= 1")
    _check(config, "dpo.grad_accum", lambda v: isinstance(v, int) and v >= 1 and config.dpo.pairs_per_step % v == 0,
           "must be an integer >= 1 dividing dpo.pairs_per_step")
    _check(config, "dpo.epochs", lambda v: isinstance(v, int) and v >= 1, "must be an integer >= 1")
    _check(config, "dpo.max_length", lambda v: isinstance(v, int) and v >= 2, "must be an integer >= 2")
    _check(config, "dpo.max_prompt_length", lambda v: isinstance(v, int) and 0 <= v < config.dpo.max_length,
           "must be an integer in [0, dpo.max_length)")
    _check(config, "mesh", lambda v: all(isinstance(s, int) and (s >= 1 or s == -1) for s in dict(v).values()),
           "axis sizes must be positive integers or -1")
    _check(config, "evaluation.judge", lambda v: isinstance(v, str) and v,
           "must be 'tribe' (the other members judge) or a judge model folder ('embedded' for SmolLM2)")
    if "select" in config.evaluation:  # configs written before evaluation.select report the last iteration
        _check(config, "evaluation.select", lambda v: v in ("last", "best_dev"),
               "must be 'last' (the best member by dev after the last iteration) or 'best_dev' (the best dev "
               "score over every iteration, 0 included)")
    if _get(config, "experts.enabled"):
        _check(config, "tribe.adapters", lambda v: not any(v),
               "must be empty when experts.enabled (the experts are the tribe's adapters)")
        _check(config, "experts.sources", lambda v: len(v) >= 1 and all(hasattr(x, "get") for x in v),
               "must list data sources (one per expert), each a mapping")
        _check(config, "experts.copies", lambda v: isinstance(v, int) and v >= 1, "must be an integer >= 1")
        if config.get("method", "sparta") == "sparta":
            _check(config, "experts.sources", lambda v: len(v) * config.experts.copies >= 3,
                   f"gives {len(config.experts.sources)} x {config.experts.copies} (experts.copies) members: "
                   "Sparta needs >= 3 (two duelists and at least one judge)")
        _check(config, "experts.response_template", lambda v: "{answer}" in v, "must contain '{answer}'")
        for key in ("examples", "epochs", "rows_per_member"):
            _check(config, f"experts.{key}", lambda v: isinstance(v, int) and v >= 1, "must be an integer >= 1")
        _check(config, "experts.learning_rate", positive, "must be > 0")
        _check(config, "experts.max_prompt_length", lambda v: isinstance(v, int) and 1 <= v < config.experts.max_length,
               "must be an integer in [1, experts.max_length)")
    _check(config, "checkpoint.max_to_keep", lambda v: isinstance(v, int) and v >= 1, "must be an integer >= 1")
    from sparta_jax.eval_check import check_evaluation_config  # a run that trains must be able to evaluate

    check_evaluation_config(config)
