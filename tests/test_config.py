"""YAML + --set overrides -> dataclasses, with errors that name the key."""

from __future__ import annotations

import pytest

from tfllm.config import ConfigError, load_config, save_config
from tfllm.data.stages import PretrainDataConfig

REPO_CONFIG = "configs/data/pretrain.yaml"


def test_shipped_pretrain_data_config_loads_and_matches_the_defaults():
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / REPO_CONFIG
    assert load_config(PretrainDataConfig, path) == PretrainDataConfig()


def test_overrides_are_parsed_as_yaml_and_type_checked():
    cfg = load_config(PretrainDataConfig, None, [
        "examples.seq_len=256", "dedup.near=false", "filter.max_symbol_ratio=1",
        "normalize.unicode_form=null", "corpus.column=sentence",
    ])
    assert cfg.examples.seq_len == 256 and cfg.dedup.near is False
    assert cfg.filter.max_symbol_ratio == 1.0 and isinstance(cfg.filter.max_symbol_ratio, float)
    assert cfg.normalize.unicode_form is None and cfg.corpus.column == "sentence"


@pytest.mark.parametrize("override, message", [
    ("examples.seq_lenn=3", "did you mean 'seq_len'"),
    ("exampels.seq_len=3", "did you mean 'examples'"),
    ("examples.seq_len=abc", "examples.seq_len: expected int"),
    ("examples.nsp=maybe", "examples.nsp: expected bool"),
    ("examples=3", "expected a mapping"),
    ("examples.seq_len.x=3", "is a value, not a section"),
    ("noequals", "expected section.key=value"),
])
def test_bad_overrides_fail_with_the_key_named(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_config(PretrainDataConfig, None, [override])


def test_unknown_key_in_a_yaml_file_names_file_and_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("filter:\n  min_char: 3\n")
    with pytest.raises(ConfigError, match=r"c\.yaml.*filter\.min_char.*min_chars"):
        load_config(PretrainDataConfig, path)


def test_saved_config_reloads_to_the_same_values(tmp_path):
    cfg = load_config(PretrainDataConfig, None, ["examples.dupe_factor=2", "dedup.seed=9"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(PretrainDataConfig, tmp_path / "config.yaml") == cfg
