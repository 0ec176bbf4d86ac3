"""Config files and `--config.KEY=VALUE` overrides: types kept, mistakes named in one line."""

import pytest

from abcjax.config import load_config
from abcjax.errors import AbcjaxError
from conftest import REPO, TINY_CONFIG

DEFAULT = REPO / "configs" / "default.py"


@pytest.mark.parametrize("name", ["default", "tiny", "demo"])
def test_every_bundled_config_loads_and_validates(name):
    config = load_config(REPO / "configs" / f"{name}.py")
    assert config.data.path.endswith("irish.abc")


def test_default_config_is_the_seed_setup():
    config = load_config(DEFAULT)
    assert (config.model.embed_dim, config.model.hidden_size, config.model.num_layers) == (256, 1024, 1)
    assert (config.train.batch_size, config.data.seq_length) == (32, 100)


def test_overrides_keep_each_keys_type():
    config = load_config(
        TINY_CONFIG,
        [
            "--config.train.steps=9",
            "--config.train.learning_rate=1",
            "--config.data.path=x.abc",
            "--config.model.dropout=0.25",
            "--config.train.lr_schedule=cosine",
        ],
    )
    assert config.train.steps == 9 and isinstance(config.train.steps, int)
    assert config.train.learning_rate == 1.0 and isinstance(config.train.learning_rate, float)
    assert (config.data.path, config.model.dropout, config.train.lr_schedule) == ("x.abc", 0.25, "cosine")


@pytest.mark.parametrize(
    "override, message",
    [
        ("--config.train.stepz=3", "unknown config key train.stepz (did you mean steps?)"),
        ("--config.trian.steps=3", "unknown config key trian (did you mean train?)"),
        ("--config.train.steps=many", "config key train.steps takes an integer, not 'many'"),
        ("--config.train.steps=2.5", "config key train.steps takes an integer, not '2.5'"),
        ("--config.train.learning_rate=fast", "config key train.learning_rate takes a number"),
        ("--config.train=3", "config key train is a section"),
        ("--config.train.steps", "overrides look like --config.train.steps=100"),
        ("--config.train.steps=-1", "train.steps=-1 is out of range: it must be at least 0"),
        ("--config.data.val_fraction=1.0", "data.val_fraction=1.0 is out of range"),
        ("--config.model.dtype=int8", "model.dtype='int8' is out of range: it must be float32, bfloat16"),
        ("--config.train.lr_schedule=linear", "it must be constant or cosine"),
        ("--config.train.batch_size=0", "train.batch_size=0 is out of range"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(AbcjaxError) as error:
        load_config(TINY_CONFIG, [override])
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(AbcjaxError, match="config file .*nope.py not found"):
        load_config(tmp_path / "nope.py")


def test_broken_config_file_is_one_line(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("def get_config():\n    return 1 / 0\n")
    with pytest.raises(AbcjaxError, match="failed to load: ZeroDivisionError"):
        load_config(broken)


def test_config_missing_a_key_says_which(tmp_path):
    partial = tmp_path / "partial.py"
    partial.write_text(
        "import ml_collections\n"
        "def get_config():\n"
        "    return ml_collections.ConfigDict({'seed': 0, 'data': {'seq_length': 5}})\n"
    )
    with pytest.raises(AbcjaxError, match="config is missing key data.val_fraction"):
        load_config(partial)


def test_configs_in_two_directories_each_import_their_own_default(tmp_path):
    for seed in (5, 6):
        directory = tmp_path / f"configs{seed}"
        directory.mkdir()
        (directory / "default.py").write_text(
            (REPO / "configs" / "default.py").read_text().replace("config.seed = 0", f"config.seed = {seed}")
        )
        (directory / "mine.py").write_text("import default\n\n\ndef get_config():\n    return default.get_config()\n")
        assert load_config(directory / "mine.py").seed == seed
