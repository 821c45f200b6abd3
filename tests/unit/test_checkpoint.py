import json
import re

import pytest
import torch

from commer_core.backbone import load_backbone
from commer_core.checkpoint import CheckpointError, _sha256, fingerprint, load_checkpoint, read_config, save_checkpoint
from tests.helpers import DOCS, make_compressor


@pytest.fixture
def saved(tiny_backbone, tmp_path):
    compressor = make_compressor(tiny_backbone)
    fp = save_checkpoint(compressor, tmp_path / "ck", trained=True, training={"steps": 3})
    return compressor, tmp_path / "ck", fp


def test_round_trip_is_bit_exact(saved):
    compressor, path, _ = saved
    loaded = load_checkpoint(path)  # loads its own backbone from the config
    assert torch.equal(loaded.compression_embeddings, compressor.compression_embeddings)
    a, b = compressor.lora_state_dict(), loaded.lora_state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(loaded.compress_texts(DOCS), compressor.compress_texts(DOCS))
    config = read_config(path)
    assert config["trained"] is True and config["training"] == {"steps": 3}
    assert config["compressor"]["num_embeddings"] == 4 and config["compressor"]["hidden_size"] == 64
    assert len(config["base_model"]["weights_sha256"]) == 64


def test_no_pickle_files_anywhere(saved):
    _, path, _ = saved
    suffixes = {p.suffix for p in path.rglob("*") if p.is_file()}
    assert suffixes <= {".json", ".safetensors", ".md"}


def test_fingerprint_identifies_content(saved, tmp_path):
    compressor, path, fp = saved
    assert fp == fingerprint(path) and len(fp) == 64
    with torch.no_grad():
        compressor.compression_embeddings.add_(1.0)
    assert save_checkpoint(compressor, tmp_path / "other", trained=True, training={"steps": 3}) != fp


def test_saving_over_a_checkpoint_keeps_the_old_one_until_the_new_one_is_in_place(saved, monkeypatch):
    import commer_core.files as files

    compressor, path, fp = saved
    real_rename = files.os.rename

    def fail_on_staging(src, dst):  # the rename that would put the new checkpoint in place
        if str(src).startswith(str(path.parent / f".{path.name}-")):
            raise OSError("simulated failure")
        real_rename(src, dst)

    monkeypatch.setattr(files.os, "rename", fail_on_staging)
    with torch.no_grad():
        compressor.compression_embeddings.add_(1.0)
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(compressor, path, trained=True, training={"steps": 4})
    monkeypatch.undo()
    assert fingerprint(path) == fp and read_config(path)["training"] == {"steps": 3}
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no staging or aside copy left
    assert save_checkpoint(compressor, path, trained=True, training={"steps": 4}) != fp


def test_an_altered_file_is_refused(saved):
    _, path, _ = saved
    target = path / "compression_embeddings.safetensors"
    data = bytearray(target.read_bytes())
    data[-1] ^= 1
    target.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="compression_embeddings.safetensors was altered"):
        load_checkpoint(path)


def test_a_different_base_model_is_refused(saved, tmp_path):
    _, path, _ = saved
    config = json.loads((path / "commer_config.json").read_text())
    # another backbone: same architecture, different weights
    other = load_backbone("tiny-random")
    other.weights_sha256 = "0" * 64
    with pytest.raises(CheckpointError, match="made for base model"):
        load_checkpoint(path, other)
    assert config["base_model"]["name"] == "tiny-random"


def _edit_tokenizer_record(path, **changes):
    """Rewrite the checkpoint's tokenizer record and re-sum it, as a checkpoint made elsewhere would be."""
    config = json.loads((path / "commer_config.json").read_text())
    config["tokenizer"].update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del config["tokenizer"][key]
    (path / "commer_config.json").write_text(json.dumps(config))
    _resum(path, lambda sums: {**sums, "commer_config.json": _sha256(path / "commer_config.json")})


def test_a_checkpoint_trained_with_another_tokenizer_is_refused_naming_what_differs(saved):
    _, path, _ = saved
    recorded = read_config(path)["tokenizer"]
    assert recorded["eos_token_id"] == 2 and len(recorded["probe_sha256"]) == 64
    # the same weights converted by transformers 5.17 made <|im_start|> (id 1) the eos token
    _edit_tokenizer_record(path, eos_token_id=1, pad_token_id=1)
    with pytest.raises(CheckpointError, match=r"another tokenizer .*pad_token_id 1 here 2; eos_token_id 1 here 2"):
        load_checkpoint(path)
    _edit_tokenizer_record(path, eos_token_id=2, pad_token_id=2, probe_sha256="0" * 64)
    with pytest.raises(CheckpointError, match="probe_sha256"):
        load_checkpoint(path)
    # a record written before the probe existed (the bundled checkpoint's) is checked on the rest
    _edit_tokenizer_record(path, probe_sha256=None)
    assert load_checkpoint(path).config.num_embeddings == 4


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not a commer checkpoint"):
        load_checkpoint(tmp_path)


def _resum(path, edit):
    """Rewrite checksums.json through ``edit`` (a function of the {name: sha256} dict)."""
    sums = path / "checksums.json"
    sums.write_text(json.dumps(edit(json.loads(sums.read_text()))))


@pytest.mark.parametrize("content", ["[]", "null", '"x"', "{}", '{"commer_config.json": 3}', "{not json"])
def test_a_checksums_file_that_is_not_an_object_of_sha256_strings_is_refused_naming_it(saved, content):
    _, path, _ = saved
    (path / "checksums.json").write_text(content)
    with pytest.raises(CheckpointError, match=re.escape(str(path / "checksums.json"))):
        read_config(path)


def test_a_pickle_file_is_refused_by_name_even_when_listed(saved):
    import hashlib

    _, path, _ = saved
    for suffix in (".bin", ".pt", ".pkl"):
        bad = path / "adapter" / f"adapter_model{suffix}"
        bad.write_bytes(b"\x80\x04pickled")
        _resum(path, lambda s, bad=bad: {**s, f"adapter/{bad.name}": hashlib.sha256(bad.read_bytes()).hexdigest()})
        with pytest.raises(CheckpointError, match=re.escape(str(bad)) + ".*not allowed"):
            read_config(path)
        bad.unlink()
        _resum(path, lambda s, bad=bad: {k: v for k, v in s.items() if k != f"adapter/{bad.name}"})
    read_config(path)  # back to the saved files: accepted


def test_checksums_must_list_exactly_the_files_present(saved):
    _, path, _ = saved
    real = json.loads((path / "checksums.json").read_text())
    _resum(path, lambda s: {k: v for k, v in s.items() if k != "adapter/adapter_config.json"})
    with pytest.raises(CheckpointError, match=re.escape(str(path / "adapter/adapter_config.json")) + " is not listed"):
        read_config(path)
    (path / "adapter" / "checksums.json").write_text("{}")  # not the checkpoint's own: an ordinary file
    _resum(path, lambda s: real)
    with pytest.raises(CheckpointError, match=re.escape(str(path / "adapter/checksums.json")) + " is not listed"):
        read_config(path)
    (path / "adapter" / "checksums.json").unlink()
    _resum(path, lambda s: {**real, "extra.json": "0" * 64})
    with pytest.raises(CheckpointError, match=re.escape(str(path / "extra.json")) + " is listed .* but missing"):
        read_config(path)


def test_the_compress_launch_check_refuses_a_bad_checksums_file(saved):
    from pipelines.plan import CompressError, load_checkpoint_config

    _, path, _ = saved
    assert load_checkpoint_config(str(path)).config["trained"] is True
    (path / "checksums.json").write_text("[]")
    with pytest.raises(CompressError, match="checksums.json"):
        load_checkpoint_config(str(path))


def test_the_bundled_checkpoint_passes_the_strict_check():
    from commer_core.checkpoint import verify
    from commer_core.defaults import default_checkpoint_path

    verify(default_checkpoint_path())
