"""The program as a user runs it: config paths from any directory, eval of a workdir, failed launches that leave
nothing behind, errors without tracebacks, failed checkpoint saves."""
import os

from rcot_jax import configs

ROOT = os.path.join(os.path.dirname(__file__), "..")


def test_a_configs_path_is_found_in_the_package_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    packaged = os.path.join(configs.CONFIG_DIR, "deblur.py")
    assert configs.resolve_path("configs/deblur.py:tiny") == packaged + ":tiny"
    assert configs.resolve_path("./configs/benchmark.py:b:bf16") == os.path.join(
        configs.CONFIG_DIR, "benchmark.py") + ":b:bf16"
    assert configs.resolve_argv(["main", "--config", "configs/sr.py", "--config.seed=1"]) == [
        "main", "--config", os.path.join(configs.CONFIG_DIR, "sr.py"), "--config.seed=1"]
    assert configs.resolve_path("configs/nowhere.py") == "configs/nowhere.py"   # left for the error message
    assert configs.resolve_path("/abs/configs/deblur.py") == "/abs/configs/deblur.py"

    (tmp_path / "configs").mkdir()                                # a user's own configs/ folder wins
    (tmp_path / "configs" / "deblur.py").write_text("")
    assert configs.resolve_argv(["main", "--config=configs/deblur.py:tiny"]) == [
        "main", "--config=configs/deblur.py:tiny"]


def test_the_repository_configs_link_is_the_package():
    assert os.path.samefile(os.path.join(ROOT, "configs"), configs.CONFIG_DIR)
