"""The object-store client against a real S3-API server."""

from __future__ import annotations

import pytest

from mlops.object_store import ObjectStore

pytestmark = pytest.mark.integration


@pytest.fixture
def store(settings, s3_server):
    s = ObjectStore.from_settings(settings)
    s.ensure_bucket()
    s.ensure_bucket()  # idempotent
    yield s
    s.delete_prefix("t-objstore")


def test_bytes_json_and_existence(store):
    store.put_bytes("t-objstore/a.bin", b"\x00\x01")
    store.put_json("t-objstore/b.json", {"rows": 3})
    assert store.get_bytes("t-objstore/a.bin") == b"\x00\x01"
    assert store.get_json("t-objstore/b.json") == {"rows": 3}
    assert store.exists("t-objstore/a.bin") and not store.exists("t-objstore/missing")
    with pytest.raises(KeyError):
        store.get_bytes("t-objstore/missing")


def test_prefix_upload_download_delete(store, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "_manifest.json").write_text("{}")
    (src / "part-0.parquet").write_bytes(b"p0")
    (src / "sub" / "part-1.parquet").write_bytes(b"p1")
    keys = store.upload_dir(src, "t-objstore/ds", last="_manifest.json")
    assert keys[-1] == "t-objstore/ds/_manifest.json"  # the commit marker goes last
    assert store.list_keys("t-objstore/ds/") == sorted(keys)

    paths = store.download_prefix("t-objstore/ds", tmp_path / "dst")
    assert sorted(p.relative_to(tmp_path / "dst").as_posix() for p in paths) == [
        "_manifest.json", "part-0.parquet", "sub/part-1.parquet"]
    assert (tmp_path / "dst" / "sub" / "part-1.parquet").read_bytes() == b"p1"

    store.put_bytes("t-objstore/ds-other/keep", b"x")  # a sibling with a common name prefix survives
    assert store.delete_prefix("t-objstore/ds") == 3
    assert store.list_keys("t-objstore/ds/") == []
    assert store.exists("t-objstore/ds-other/keep")
