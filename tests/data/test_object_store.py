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


def test_files_listing_and_prefix_delete(store, tmp_path):
    src = tmp_path / "part-0.parquet"
    src.write_bytes(b"p0")
    store.put_file("t-objstore/ds/part-0.parquet", src)
    store.put_bytes("t-objstore/ds/sub/part-1.parquet", b"p1")
    store.put_json("t-objstore/ds/_manifest.json", {})
    assert store.list_keys("t-objstore/ds/") == [
        "t-objstore/ds/_manifest.json",
        "t-objstore/ds/part-0.parquet",
        "t-objstore/ds/sub/part-1.parquet",
    ]
    store.get_file("t-objstore/ds/sub/part-1.parquet", tmp_path / "dst" / "part-1.parquet")
    assert (tmp_path / "dst" / "part-1.parquet").read_bytes() == b"p1"

    store.put_bytes("t-objstore/ds-other/keep", b"x")  # a sibling with a common name prefix survives
    assert store.delete_prefix("t-objstore/ds") == 3
    assert store.list_keys("t-objstore/ds/") == []
    assert store.exists("t-objstore/ds-other/keep")
