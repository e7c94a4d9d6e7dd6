"""The object-store client against moto's S3 server over HTTP: what each operation answers, the conditional
writes leases and commits rest on, and the errors a person sees."""

from __future__ import annotations

from pathlib import Path

import pytest

from memberpulse.errors import ConfigError, ExitCode, StorageUnavailable
from memberpulse.settings import load_settings
from memberpulse.storage import ObjectStore, ObjectStoreConfig, StorageUrl, open_store
from tests.support.blackhole import BlackholeProxy
from tests.support.object_store import S3Server


@pytest.fixture
def store(storage_env: dict[str, str]) -> ObjectStore:
    opened = open_store(load_settings())
    assert opened is not None
    return opened


def test_unset_url_is_the_local_layout() -> None:
    assert open_store(load_settings(storage_url=None)) is None


def test_whole_object_round_trip_with_versions(store: ObjectStore) -> None:
    assert store.get("state/tree.json") is None
    first = store.put("state/tree.json", b"one")
    got = store.get("state/tree.json")
    assert got is not None and got.data == b"one" and got.version == first
    second = store.put("state/tree.json", b"two")
    assert second != first
    assert [info.key for info in store.list("state")] == ["state/tree.json"]


def test_create_only_once(store: ObjectStore) -> None:
    assert store.put_new("leases/run.json", b"mine") is not None
    assert store.put_new("leases/run.json", b"theirs") is None
    got = store.get("leases/run.json")
    assert got is not None and got.data == b"mine"


def test_replace_only_the_version_read(store: ObjectStore) -> None:
    version = store.put("manifest.json", b"v1")
    newer = store.replace("manifest.json", b"v2", version)
    assert newer is not None
    assert store.replace("manifest.json", b"v3 from a stale reader", version) is None
    got = store.get("manifest.json")
    assert got is not None and got.data == b"v2"
    assert store.replace("gone.json", b"x", version) is None


def test_download_again_only_when_changed(store: ObjectStore, tmp_path: Path) -> None:
    version = store.put("snapshots/latest.duckdb", b"x" * 100_000)
    assert store.get_if_changed("snapshots/latest.duckdb", version) is None
    store.put("snapshots/latest.duckdb", b"y" * 10)
    changed = store.get_if_changed("snapshots/latest.duckdb", version)
    assert changed is not None and changed.data == b"y" * 10
    target = tmp_path / "copy"
    assert store.download("snapshots/latest.duckdb", target) == changed.version
    assert target.read_bytes() == b"y" * 10


def test_copy_within_the_store_replaces_the_target(store: ObjectStore) -> None:
    store.put("state/objects/abc", b"snapshot v2")
    store.put("analytics/latest.duckdb", b"snapshot v1")
    store.copy("state/objects/abc", "analytics/latest.duckdb")
    copied = store.get("analytics/latest.duckdb")
    assert copied is not None and copied.data == b"snapshot v2" and store.requests["copy"] == 1


def test_list_after_a_key_and_across_pages(store: ObjectStore) -> None:
    keys = [f"raw/w1/{n:08d}" for n in range(1_005)]
    for key in keys:
        store.put(key, b".")
    store.requests.clear()
    assert [info.key for info in store.list("raw/w1")] == keys
    assert store.requests["list"] == 2  # S3 pages of 1,000
    assert [info.key for info in store.list("raw/w1", after=keys[1_000])] == keys[1_001:]


def test_every_request_is_counted(store: ObjectStore) -> None:
    store.requests.clear()
    store.put("a", b"1")
    store.get("a")
    store.head("a")
    store.delete("a")
    assert dict(store.requests) == {"put": 1, "get": 1, "head": 1, "delete": 1}


@pytest.mark.parametrize(
    "url",
    ["/var/lib/memberpulse", "file:///tmp/x", "https://bucket.s3.amazonaws.com/x", "s3://", "s3://key:secret@bucket/x"],
)
def test_a_url_that_is_not_an_object_store_is_refused(url: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(storage_url=url)
    assert "MEMBERPULSE_STORAGE_URL" in str(refused.value)
    assert "secret" not in str(refused.value).replace("AWS_SECRET", "")


def test_url_parts() -> None:
    url = StorageUrl.parse("S3://my-bucket/team/memberpulse/")
    assert (url.scheme, url.bucket, url.prefix, str(url)) == (
        "s3",
        "my-bucket",
        "team/memberpulse",
        "s3://my-bucket/team/memberpulse",
    )


def test_a_missing_bucket_is_one_clear_error(storage_env: dict[str, str]) -> None:
    store = ObjectStore.open(StorageUrl.parse("s3://no-such-bucket-here/x"))
    with pytest.raises(ConfigError) as failed:
        store.put("a", b"1")
    assert "s3://no-such-bucket-here/x/a does not exist" in str(failed.value)
    assert "\n" not in str(failed.value)


def test_a_store_that_never_answers_fails_within_its_budget(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    host, port = s3.endpoint.removeprefix("http://").split(":")
    with BlackholeProxy((host, int(port))) as hole:
        hole.stall_after(0)
        for name, value in {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{hole.port}",
            "AWS_ACCESS_KEY_ID": "k",
            "AWS_SECRET_ACCESS_KEY": "very-secret-value",
            "AWS_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
        }.items():
            monkeypatch.setenv(name, value)
        config = ObjectStoreConfig(
            connect_timeout_seconds=0.5, timeout_seconds=0.5, max_retries=1, retry_budget_seconds=2
        )
        store = ObjectStore.open(StorageUrl.parse("s3://b/p"), config)
        with pytest.raises(StorageUnavailable) as failed:
            store.put("a", b"1")
    assert failed.value.exit_code == ExitCode.TRANSIENT
    assert "very-secret-value" not in str(failed.value)


def test_cloud_variables_from_the_env_file(
    storage_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / "memberpulse.env"
    env_file.write_text("".join(f"{name}={value}\n" for name, value in storage_env.items()))
    for name in storage_env:
        monkeypatch.delenv(name)
    monkeypatch.setenv("MEMBERPULSE_ENV_FILE", str(env_file))
    store = open_store(load_settings())
    assert store is not None
    store.put("from-env-file", b"ok")
    assert store.get("from-env-file") is not None
