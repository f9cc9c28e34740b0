"""validate_config: every shipped config passes; bad values name their key."""
import os

import pytest

from sparta_jax.config_check import ConfigError, validate_config
from sparta_jax.config_files import load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(name):
    return load_config(os.path.join(REPO, "configs", f"{name}.py"))


@pytest.mark.parametrize("name", ["default", "base", "tiny", "demo", "specialists", "competent_judges", "tpu_v4", "gpu_h100"])
def test_shipped_configs_pass(name):
    validate_config(load(name))


def test_default_is_the_specialists_in_short():
    """configs/default.py is configs/specialists.py from the shipped experts, changed only where its
    docstring says (README's quickstart figures are of exactly this)."""
    from sparta_jax.experts import packaged_experts

    default, specialists = load("default").to_dict(), load("specialists").to_dict()
    changed = {(section, key) for section in default for key in (default[section] if isinstance(default[section], dict)
                                                                 else [None])
               if (default[section] if key is None else default[section][key])
               != (specialists[section] if key is None else specialists[section][key])}
    assert changed == {("experts", "enabled"), ("tribe", "adapters"), ("iterations", None), ("dpo", "epochs"),
                       ("dpo", "min_margin"), ("dpo", "best_member_lr_scale"),
                       ("evaluation", "dev"), ("evaluation", "test"), ("evaluation", "batch_size")}
    assert (default["dpo"]["min_margin"], default["dpo"]["best_member_lr_scale"]) == (0.5, 1.0)
    assert (specialists["dpo"]["min_margin"], specialists["dpo"]["best_member_lr_scale"]) == (0.25, 0.5)
    assert default["tribe"]["adapters"] == packaged_experts("specialists") and not default["experts"]["enabled"]
    assert (default["iterations"], default["dpo"]["epochs"], default["evaluation"]["dev"],
            default["evaluation"]["test"], default["evaluation"]["test_all_members"]) == (1, 4, 20, 100, True)


def test_specialists_slow_only_a_tribes_best_member():
    """A one-model baseline trains only the best initial member: it keeps the full rate, where
    Sparta's best member trains at half of it."""
    for method in ("self_rewarding", "meta_rewarding", "spin", "sppo"):
        c = load_config(os.path.join(REPO, "configs", "specialists.py"), method)
        validate_config(c)
        assert c.dpo.best_member_lr_scale == 1.0 and c.dpo.min_margin == 0.25
    assert load("specialists").dpo.best_member_lr_scale == 0.5


@pytest.mark.parametrize("edit, message", [
    (lambda c: setattr(c.experts, "sources", c.experts.sources[:2]), "config.experts.sources"),
    (lambda c: setattr(c.experts, "response_template", "no placeholder"), "config.experts.response_template"),
    (lambda c: setattr(c.experts, "rows_per_member", 0), "config.experts.rows_per_member = 0"),
    (lambda c: setattr(c.experts, "max_prompt_length", 96), "config.experts.max_prompt_length = 96"),
    (lambda c: setattr(c.tribe, "adapters", ("/x/a",)), "must be empty when experts.enabled"),
    (lambda c: setattr(c.evaluation, "judge", ""), "config.evaluation.judge"),
])
def test_bad_expert_and_evaluation_values_name_their_key(edit, message):
    config = load("demo")
    config.experts.enabled = True
    validate_config(config)  # demo.py with its experts is valid before the edit
    edit(config)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        validate_config(config)


@pytest.mark.parametrize("key, value", [("sft_weight", -0.5), ("min_margin", -1.0), ("replay_iterations", -1)])
def test_bad_dpo_extras_name_their_key(key, value):
    config = load("competent_judges")
    setattr(config.dpo, key, value)
    with pytest.raises(ConfigError, match=rf"config\.dpo\.{key} = {value}"):
        validate_config(config)


@pytest.mark.parametrize("method, key, value, ok", [
    ("self_rewarding", "judgments", 1, True), ("self_rewarding", "judgments", 0, False),
    ("self_rewarding", "samples", 1, False), ("self_rewarding", "prompt", "pairwise", False),
    ("meta_rewarding", "judgments", 1, False), ("meta_rewarding", "length_tier", 0.5, False),
    ("meta_rewarding", "length_tier", 0.0, True), ("sppo", "samples", 2, True),
])
def test_baseline_settings_name_their_key(method, key, value, ok):
    config = load("tiny")
    config.method = method
    setattr(config.methods[method], key, value)
    if ok:
        validate_config(config)
    else:
        with pytest.raises(ConfigError, match=rf"config\.methods\.{method}\.{key} = "):
            validate_config(config)


def _full(config):
    config.tribe.kind = "full"


def test_judge_mode_names_the_control():
    config = load("base")
    config.judge.mode = "oracle"
    with pytest.raises(ConfigError, match=r"config\.judge\.mode = 'oracle': must be 'sampled', 'logits' or 'verifier'"):
        validate_config(config)
    config.judge.mode = "verifier"
    validate_config(config)


@pytest.mark.parametrize("edit, message", [
    (lambda c: setattr(c.tribe, "kind", "half"), "config.tribe.kind = 'half'"),
    (lambda c: (_full(c), setattr(c.tribe, "adapters", ("/x/a",))), "config.tribe.adapters = ('/x/a',): must be empty "
                                                                     "when tribe.kind='full'"),
    (lambda c: (_full(c), setattr(c.experts, "enabled", True)), "config.experts.enabled = True"),
])
def test_bad_tribe_kind_values_name_their_key(edit, message):
    config = load("tiny")
    edit(config)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(").replace(")", r"\)")):
        validate_config(config)


@pytest.mark.reference
def test_full_tribe_member_folders_are_checked(tmp_path, smollm2_dir):
    """Full tribes need distinct member folders of tribe.base's architecture; each fault is named."""
    from tiny_models import save_hf_model, save_tiny_chat_model

    from sparta_jax.tribe import build_tribe

    config = load("tiny")
    config.tribe.kind = "full"
    config.tribe.base = save_tiny_chat_model(tmp_path / "base", smollm2_dir)
    with pytest.raises(ConfigError, match="member_folders is empty: .* would never differ"):
        build_tribe(config.tribe, config.sampler, None)
    config.tribe.member_folders = (str(tmp_path / "base"), str(tmp_path / "nowhere"), str(tmp_path / "base"))
    with pytest.raises(FileNotFoundError, match="model folder .*nowhere' does not exist"):
        build_tribe(config.tribe, config.sampler, None)
    save_hf_model("qwen2", tmp_path / "other")
    config.tribe.member_folders = (str(tmp_path / "base"), str(tmp_path / "other"), str(tmp_path / "base"))
    config.tribe.names = ("a", "b", "c")
    with pytest.raises(ConfigError, match=r"'.*other' is not the architecture of tribe\.base .* \(differs in .*vocab_size"):
        build_tribe(config.tribe, config.sampler, None)


@pytest.mark.parametrize("override, key, near", [
    ("--config.data.path=x", "data.path", "data.task"),
    ("--config.dpo.betta=0.2", "dpo.betta", "dpo.beta"),
    ("--config.itrations=3", "itrations", "iterations"),
])
def test_unknown_override_key_names_it_and_its_neighbours(override, key, near):
    from sparta_jax.config_files import unknown_override

    tiny = os.path.join(REPO, "configs", "tiny.py")
    message = unknown_override(["main", f"--config={tiny}", "--config.dpo.beta=0.2", override])
    assert message is not None and f"unknown config key {key!r}" in message
    assert near in message.split("nearest known keys:")[1]
    assert unknown_override(["main", "--config", tiny, "--config.dpo.beta=0.2", "--config.tribe.members=2"]) is None


@pytest.mark.e2e
def test_unknown_override_key_exits_2_with_one_line_and_writes_nothing(tmp_path):
    import subprocess
    import sys

    workdir, tiny = tmp_path / "run", os.path.join(REPO, "configs", "tiny.py")
    proc = subprocess.run([sys.executable, "-m", "sparta_jax.main", f"--config={tiny}",
                           f"--workdir={workdir}", "--config.data.path=x"], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert lines == ["error: unknown config key 'data.path' in " + os.path.join(REPO, "configs", "tiny.py")
                     + "; nearest known keys: data.test, data.task, data.train"], proc.stderr[-2000:]
    assert not workdir.exists()


def test_report_every_is_checked_and_the_last_iteration_reports_unless_none_is_asked():
    from sparta_jax.train import report_due

    c = load_config(os.path.join(REPO, "configs", "base.py"))
    c.iterations = 5
    assert [t for t in range(1, 6) if report_due(c, t)] == [1, 2, 3, 4, 5]  # the default: every iteration
    c.report_every = 2
    assert [t for t in range(1, 6) if report_due(c, t)] == [2, 4, 5]
    c.report_every = 0
    assert [t for t in range(1, 6) if report_due(c, t)] == [5]
    c.report_every = -1  # no report (test runs; `python -m sparta_jax.report` writes one later)
    assert [t for t in range(1, 6) if report_due(c, t)] == []
    validate_config(c)
    for bad in (-2, -3):  # (ml_collections itself refuses a float or a string for an int field)
        c.report_every = bad
        with pytest.raises(ConfigError, match="config.report_every"):
            validate_config(c)


def test_bad_decode_kernels_name_their_key():
    config = load("tpu_v4")
    assert config.sampler.decode_kernels == "pallas"  # the TPU configs' (base.py: "xla")
    config.sampler.decode_kernels = "mosaic"
    with pytest.raises(ConfigError, match=r"config\.sampler\.decode_kernels = 'mosaic'.*'xla', 'pallas'"):
        validate_config(config)
