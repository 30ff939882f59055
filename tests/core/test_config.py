"""The config tree: defaults, YAML, env and --set precedence, and errors that name the key and file."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from core.config import ConfigError, TandemConfig, load_config
from core.config.reference import render_reference

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, tree: dict) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def test_every_shipped_config_validates() -> None:
    configs = sorted((ROOT / "configs").glob("*.yaml"))
    assert configs, "configs/ ships at least the demo config"
    for path in configs:
        assert isinstance(load_config(path, environ={}), TandemConfig)


def test_precedence_is_defaults_file_env_then_set(tmp_path: Path) -> None:
    path = write(tmp_path, {"learner": {"lr": 0.001, "max_steps": 7}})
    env = {"TANDEM_LEARNER__LR": "0.002", "TANDEM_LEARNER__BATCH_GROUPS": "4", "TANDEM_HOME": "/x"}
    config = load_config(path, ["learner.lr=3e-4"], environ=env)
    assert config.learner.lr == pytest.approx(3e-4)  # --set beats env beats file
    assert config.learner.batch_groups == 4  # env beats the default
    assert config.learner.max_steps == 7  # file beats the default
    assert config.learner.warmup_steps == 0  # default


def test_set_parses_yaml_values_and_list_items(tmp_path: Path) -> None:
    config = load_config(
        None, ['actors.stop=["\\n", ";"]', "reward.scorers.0.weight=2.5", "run.max_minutes=null"], environ={}
    )
    assert config.actors.stop == ["\n", ";"]
    assert config.reward.scorers[0].weight == 2.5
    assert config.run.max_minutes is None


def test_unknown_key_is_named_with_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, {"learner": {"learning_rate": 0.1}})
    with pytest.raises(ConfigError) as error:
        load_config(path, environ={})
    assert str(path) in str(error.value)
    assert "learner.learning_rate: unknown key" in str(error.value)


def test_unknown_section_and_wrong_type_are_named(tmp_path: Path) -> None:
    path = write(tmp_path, {"learnr": {}, "actors": {"n_samples": "four"}})
    with pytest.raises(ConfigError) as error:
        load_config(path, environ={})
    message = str(error.value)
    assert "learnr: unknown key" in message
    assert "actors.n_samples" in message and "'four'" in message


def test_bad_values_are_named() -> None:
    with pytest.raises(ConfigError, match=r"buffer\.on_policy_fraction"):
        load_config(None, ["buffer.on_policy_fraction=1.5"], environ={})
    with pytest.raises(ConfigError, match=r"algorithm\.name"):
        load_config(None, ["algorithm.name=ppo"], environ={})
    with pytest.raises(ConfigError, match=r"reward\.scorers\.0\.pattrn: unknown key"):
        load_config(None, ["reward.scorers.0.pattrn=x"], environ={})


def test_env_override_with_a_bad_value_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"learner\.lr"):
        load_config(None, environ={"TANDEM_LEARNER__LR": "fast"})


def test_cross_section_invariants_name_both_keys() -> None:
    with pytest.raises(ConfigError) as error:
        load_config(None, ["algorithm.name=rloo", "buffer.on_policy_fraction=0.5"], environ={})
    assert "buffer.on_policy_fraction" in str(error.value) and "algorithm.importance_sampling" in str(
        error.value
    )
    with pytest.raises(ConfigError, match=r"actors\.n_samples=1"):
        load_config(None, ["actors.n_samples=1"], environ={})
    with pytest.raises(ConfigError, match=r"buffer\.high_water=2 is below learner\.batch_groups=16"):
        load_config(None, ["buffer.high_water=2"], environ={})
    # The same RLOO config is fine once it is on-policy only.
    assert load_config(None, ["algorithm.name=rloo", "buffer.on_policy_fraction=1.0"], environ={})


def test_rloo_importance_sampling_refuses_what_it_cannot_weight() -> None:
    """The weights pi_T/mu need a behaviour distribution the learner reproduces (temperature yes,
    top-p truncation no, greedy has no density) and behaviour log-probs (offline groups have none)."""
    rloo = ["algorithm.name=rloo", "algorithm.importance_sampling=truncated", "buffer.on_policy_fraction=0.5"]
    with pytest.raises(ConfigError, match=r"actors\.top_p=0\.9.*truncated distribution") as error:
        load_config(None, [*rloo, "buffer.offline_fraction=0", "actors.top_p=0.9"], environ={})
    assert "buffer.offline_fraction" not in str(error.value)  # only what is wrong is named
    with pytest.raises(ConfigError, match=r"actors\.temperature=0\.0: greedy"):
        load_config(None, [*rloo, "buffer.offline_fraction=0", "actors.temperature=0"], environ={})
    with pytest.raises(ConfigError, match=r"buffer\.offline_fraction=1\.0: offline groups carry no"):
        load_config(None, rloo, environ={})
    config = load_config(None, [*rloo, "buffer.offline_fraction=0", "actors.temperature=0.7"], environ={})
    assert (config.actors.temperature, config.buffer.offline_fraction) == (0.7, 0.0)
    # Without importance weights none of this applies (top-p is then the user's choice).
    assert load_config(None, ["algorithm.name=copg", "actors.top_p=0.9"], environ={})


def test_duplicate_scorer_names_are_rejected() -> None:
    tree = {
        "reward": {"scorers": [{"type": "exact_match", "name": "a"}, {"type": "exact_match", "name": "a"}]}
    }
    with pytest.raises(ConfigError, match="repeated: \\['a'\\]"):
        from core.config.loader import validate_tree

        validate_tree(tree, "inline")


def test_config_is_frozen() -> None:
    config = load_config(None, environ={})
    with pytest.raises(ValueError):
        config.learner.lr = 1.0  # type: ignore[misc]


def test_every_field_is_documented_and_the_reference_lists_it() -> None:
    reference = render_reference()
    for section_name, section in TandemConfig.model_fields.items():
        for name, field in section.annotation.model_fields.items():  # type: ignore[union-attr]
            assert field.description, f"{section_name}.{name} has no docstring"
            assert f"`{section_name}.{name}`" in reference


def test_the_configuration_reference_is_current() -> None:
    reference = (ROOT / "docs" / "configuration.md").read_text()
    assert render_reference() in reference, (
        "regenerate with: tandem config reference --write docs/configuration.md"
    )


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args], capture_output=True, text=True, cwd=ROOT, timeout=60
    )


def test_cli_show_prints_the_resolved_tree() -> None:
    result = run_cli("config", "show", "configs/demo.yaml", "--set", "learner.lr=0.5")
    assert result.returncode == 0, result.stderr
    tree = yaml.safe_load(result.stdout)
    assert tree["learner"]["lr"] == 0.5
    assert set(tree) == set(TandemConfig.model_fields)


def test_cli_validate_exits_nonzero_naming_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, {"actors": {"n_samples": "many"}, "extra_section": 1})
    result = run_cli("config", "validate", str(path))
    assert result.returncode == 2
    assert "actors.n_samples" in result.stderr and "extra_section: unknown key" in result.stderr
    assert str(path) in result.stderr
