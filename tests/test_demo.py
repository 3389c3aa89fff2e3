"""The one-minute OPDF demo (`python -m opdf_ray.demo`) on the real packaged all-MiniLM-L6-v2, offline."""

import pytest
from transformers import AutoConfig

from opdf_ray import demo


def test_demo_over_parameterizes_minilm_and_merges_exactly(tmp_path, caplog):
    caplog.set_level("INFO", logger="opdf_ray")
    assert demo.main(["--cores", "3", "--steps", "2", "--out", str(tmp_path)]) == 0
    assert "merge is exact: yes" in caplog.text
    config = AutoConfig.from_pretrained(tmp_path)
    assert (config.num_hidden_layers, config.hidden_size) == (6, 384)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "tokenizer.json").is_file()


def test_demo_rejects_bad_core_counts_with_a_clear_message(capsys):
    with pytest.raises(SystemExit) as exit_info:
        demo.main(["--cores", "1"])
    assert exit_info.value.code == 2
    assert "n_cores must be an int ≥ 2" in capsys.readouterr().err


@pytest.mark.slow
def test_the_demo_without_out_leaves_no_checkpoint_behind(tmp_path, monkeypatch, caplog):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))          # where its temporary folder would stay
    caplog.set_level("INFO", logger="opdf_ray")
    assert demo.main(["--cores", "3", "--steps", "1"]) == 0
    assert "merge is exact: yes" in caplog.text and "removed at the end" in caplog.text
    assert not list(tmp_path.glob("opdf-demo-*"))
