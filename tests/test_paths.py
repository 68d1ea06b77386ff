"""rcot_jax.paths: `~` and environment variables expanded once, where a flag or a config key is read. The
README's prepare command with a literal `~`: tests/test_builders.py."""
from absl import flags

from rcot_jax import paths
from rcot_jax.configs import derain


def test_home_and_variables_are_expanded_and_empty_values_kept(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("RCOT_DATA", "/data/rcot")
    assert paths.expand("~/runs/a") == f"{tmp_path}/runs/a"
    assert paths.expand("$RCOT_DATA/gopro") == "/data/rcot/gopro"
    assert paths.expand("") == "" and paths.expand(None) is None
    config = derain.get_config("tiny")
    config.data.update(train_dir="~/images", data_dir="$RCOT_DATA", match="rain-{id} -> norain-{id}")
    data = paths.expand_data_paths(config.data)
    assert (data.train_dir, data.data_dir, data.match) == (f"{tmp_path}/images", "/data/rcot",
                                                           "rain-{id} -> norain-{id}")
    assert config.data.train_dir == "~/images"                 # a copy: the run's config keeps what was written


def test_a_path_flag_is_expanded_as_it_is_parsed(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    values = flags.FlagValues()
    paths.DEFINE_path("workdir", None, "A run.", flag_values=values)
    paths.DEFINE_path("checkpoint", [], "Files.", multi=True, flag_values=values)
    values(["prog", "--workdir=~/run", "--checkpoint=~/a.pth", "--checkpoint=$HOME/b.pth"])
    assert values.workdir == f"{tmp_path}/run"
    assert values.checkpoint == [f"{tmp_path}/a.pth", f"{tmp_path}/b.pth"]
