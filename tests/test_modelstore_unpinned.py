"""Official assets whose checksum cannot be pinned: never downloaded, registered by hand with a recorded hash."""

import pytest

from sbpet_bench.api import Asset
from sbpet_bench.modelstore import ModelStore, ModelStoreError, sha256_of


def test_unpinned_asset_is_added_by_hand_and_verified(tmp_path):
    asset = Asset(name="gen", filename="gen.pt", sha256="", size=0, licence="see source", official_only=True,
                  sources=(f"file://{tmp_path / 'served.pt'}",))
    (tmp_path / "served.pt").write_bytes(b"weights")
    store = ModelStore(tmp_path / "home", {"gen": asset})
    with pytest.raises(ModelStoreError, match="no sha256 is pinned"):
        store.fetch("gen")  # no unverified download, even from a reachable source
    assert not store.is_present("gen")
    with pytest.raises(ModelStoreError, match="sbpet models add gen FILE"):
        store.path("gen")
    mine = tmp_path / "downloaded.pt"
    mine.write_bytes(b"real weights")
    store.add("gen", mine)
    assert store.is_present("gen") and store.recorded_sha256("gen") == sha256_of(mine)
    assert store.verify(["gen"]) == [("gen", "ok")]
    (tmp_path / "home" / "gen.pt").write_bytes(b"tampered")
    assert store.verify(["gen"])[0][1].startswith("corrupt")
