"""`varro model init|info` on the cached default model (no network)."""

from click.testing import CliRunner

from varro.cli import main


def test_model_info_describes_a_local_checkpoint(tiny_model_path, tmp_path):
    result = CliRunner().invoke(main, ["model", "info", str(tiny_model_path), "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "model_type         qwen3" in result.output
    assert "config.json" in result.output and "tokenizer.json" in result.output


def test_model_info_refuses_a_missing_local_path_without_downloading(tmp_path):
    missing = tmp_path / "no-such-model"
    result = CliRunner().invoke(main, ["model", "info", str(missing), "--data-dir", str(tmp_path)])
    assert result.exit_code != 0
    assert f"no model directory at {missing}" in result.output


def test_model_init_finds_the_cached_build(tiny_model_path):
    result = CliRunner().invoke(main, ["model", "init"])
    assert result.exit_code == 0, result.output
    assert f"varro-tiny already built: {tiny_model_path}" in result.output
    assert "sha256 " in result.output
