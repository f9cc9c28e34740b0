"""validate_config: every shipped config passes; bad values name their key."""
import os

import pytest

from sparta_jax.config_check import ConfigError, validate_config
from sparta_jax.config_files import load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(name):
    return load_config(os.path.join(REPO, "configs", f"{name}.py"))


@pytest.mark.parametrize("name", ["default", "tiny", "demo", "tpu_v4", "gpu_h100"])
def test_shipped_configs_pass(name):
    validate_config(load(name))


@pytest.mark.parametrize("edit, message", [
    (lambda c: setattr(c.experts, "sources", c.experts.sources[:2]), "config.experts.sources"),
    (lambda c: setattr(c.experts, "response_template", "no placeholder"), "config.experts.response_template"),
    (lambda c: setattr(c.experts, "rows_per_member", 0), "config.experts.rows_per_member = 0"),
    (lambda c: setattr(c.experts, "max_prompt_length", 96), "config.experts.max_prompt_length = 96"),
    (lambda c: setattr(c.tribe, "adapters", ("/x/a",)), "must be empty when experts.enabled"),
    (lambda c: setattr(c.evaluation, "judge", ""), "config.evaluation.judge"),
])
def test_bad_expert_and_evaluation_values_name_their_key(edit, message):
    config = load("demo")  # experts enabled
    edit(config)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        validate_config(config)
