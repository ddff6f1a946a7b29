"""The model registry on a local directory and on S3 (moto): versions, champion, history."""

from __future__ import annotations

import json
import threading

import pytest

from churnops.errors import ChurnOpsError, NoChampionError
from churnops.registry import (
    STATUS_ELIGIBLE,
    STATUS_NO_SKILL,
    ConcurrentUpdateError,
    Registry,
    new_version_id,
)


@pytest.fixture
def registry(store_uri: str) -> Registry:
    return Registry.open(store_uri)


def _register(registry: Registry, status: str = STATUS_ELIGIBLE, onnx: bool = True) -> str:
    files = {"model.joblib": b"joblib", "metrics.json": b"{}"}
    if onnx:
        files["model.onnx"] = b"onnx"
    return registry.register(files, {"contract": "telco", "status": status, "family": "test"})


def test_version_ids_sort_by_time() -> None:
    import datetime as dt

    early = new_version_id(dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    late = new_version_id(dt.datetime(2026, 1, 2, tzinfo=dt.UTC))
    assert early < late
    assert early.startswith("20260101T000000Z-") and len(early) == 23


def test_register_then_read_back(registry: Registry) -> None:
    version = _register(registry)
    card = registry.card(version)
    assert card["version"] == version and card["contract"] == "telco"
    assert card["files"] == ["metrics.json", "model.joblib", "model.onnx"]
    assert registry.read(version, "model.onnx") == b"onnx"
    assert [c["version"] for c in registry.list_versions()] == [version]


def test_versions_are_immutable(registry: Registry) -> None:
    version = _register(registry)
    registry.write_extra(version, "drift_report.json", b'{"a": 1}')
    with pytest.raises(ChurnOpsError, match="immutable"):
        registry.write_extra(version, "drift_report.json", b'{"a": 2}')
    with pytest.raises(ChurnOpsError, match="immutable"):
        registry.write_extra(version, "model.onnx", b"evil")
    assert registry.read(version, "model.onnx") == b"onnx"


def test_unknown_version_and_bad_names(registry: Registry) -> None:
    with pytest.raises(ChurnOpsError, match="no version"):
        registry.card("20260101T000000Z-abcdef")
    with pytest.raises(ChurnOpsError, match="not a version id"):
        registry.card("../etc")
    version = _register(registry)
    with pytest.raises(ChurnOpsError, match="invalid registry file name"):
        registry.read(version, "../champion.json")


def test_no_champion_yet(registry: Registry) -> None:
    assert registry.champion() is None
    assert registry.champion_etag() is None
    with pytest.raises(NoChampionError):
        registry.require_champion()
    with pytest.raises(NoChampionError):
        registry.rollback(actor="ops", reason="test")


def test_promote_rollback_and_history(registry: Registry) -> None:
    first, second = _register(registry), _register(registry)
    pointer = registry.promote(first, actor="trainer", reason="first to pass the floor")
    assert pointer["version"] == first and pointer["previous_version"] is None
    assert pointer["sequence"] == 1
    tag_before = registry.champion_etag()
    registry.promote(second, actor="retrain", reason="better AUC")
    assert registry.champion_etag() != tag_before
    back = registry.rollback(actor="alice", reason="alarm fired")
    assert back["version"] == first and back["previous_version"] == second
    assert back["sequence"] == 3
    assert registry.champion() == back
    actions = [(h["action"], h["version"], h["actor"]) for h in registry.history()]
    assert actions == [
        ("promote", first, "trainer"),
        ("promote", second, "retrain"),
        ("rollback", first, "alice"),
    ]
    assert registry.history()[-1]["reason"] == "alarm fired"


def test_no_skill_or_onnx_less_version_is_never_champion(registry: Registry) -> None:
    no_skill = _register(registry, status=STATUS_NO_SKILL)
    with pytest.raises(ChurnOpsError, match="no_skill"):
        registry.promote(no_skill, actor="t", reason="r")
    no_onnx = _register(registry, onnx=False)
    with pytest.raises(ChurnOpsError, match=r"model\.onnx"):
        registry.promote(no_onnx, actor="t", reason="r")
    assert registry.champion() is None


def test_stale_expected_etag_is_refused(registry: Registry) -> None:
    first, second, third = (_register(registry) for _ in range(3))
    registry.promote(first, actor="t", reason="r", expected_etag=None)
    seen = registry.champion_etag()
    registry.promote(second, actor="t", reason="r", expected_etag=seen)
    with pytest.raises(ConcurrentUpdateError):
        registry.promote(third, actor="t", reason="r", expected_etag=seen)
    with pytest.raises(ConcurrentUpdateError):
        registry.promote(third, actor="t", reason="first ever", expected_etag=None)
    assert registry.champion()["version"] == second


def test_concurrent_promotions_exactly_one_wins(registry: Registry) -> None:
    # GIVEN a champion and several challengers that all read the same pointer
    base = _register(registry)
    registry.promote(base, actor="t", reason="base")
    seen = registry.champion_etag()
    challengers = [_register(registry) for _ in range(6)]
    barrier = threading.Barrier(len(challengers))
    winners: list[str] = []
    losers: list[str] = []
    pointers: list[dict] = []
    stop = threading.Event()

    def watch() -> None:  # the pointer must always be a whole, valid document
        while not stop.is_set():
            raw = registry.storage.get("champion.json")
            pointers.append(json.loads(raw))

    def race(version: str) -> None:
        barrier.wait()
        try:
            registry.promote(version, actor="racer", reason="race", expected_etag=seen)
            winners.append(version)
        except ConcurrentUpdateError:
            losers.append(version)

    watcher = threading.Thread(target=watch)
    watcher.start()
    threads = [threading.Thread(target=race, args=(v,)) for v in challengers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    watcher.join()
    # THEN exactly one challenger won, the rest were told, and the pointer names the winner
    assert len(winners) == 1 and len(losers) == len(challengers) - 1
    final = registry.champion()
    assert final["version"] == winners[0] and final["previous_version"] == base
    assert final["sequence"] == 2
    assert all(p["version"] in {base, winners[0]} for p in pointers)
    assert [h["version"] for h in registry.history() if h["action"] == "promote"] == [
        base,
        winners[0],
    ]


def test_concurrent_promotions_with_default_etag_never_lose_updates(registry: Registry) -> None:
    challengers = [_register(registry) for _ in range(5)]
    barrier = threading.Barrier(len(challengers))
    outcomes: list[str] = []

    def race(version: str) -> None:
        barrier.wait()
        try:
            registry.promote(version, actor="racer", reason="race")
            outcomes.append("won")
        except ConcurrentUpdateError:
            outcomes.append("lost")

    threads = [threading.Thread(target=race, args=(v,)) for v in challengers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Every win moved the pointer exactly once: the sequence counts the winners.
    assert outcomes.count("won") >= 1
    assert registry.champion()["sequence"] == outcomes.count("won")


def test_registry_commands_promote_and_roll_back_with_who_and_why(registry, capsys) -> None:  # type: ignore[no-untyped-def]
    from churnops.cli import main
    from churnops.contract import TELCO

    card = {"contract": "telco", "schema_hash": TELCO.schema_hash, "status": STATUS_ELIGIBLE}
    files = {"model.onnx": b"onnx", "model.joblib": b"joblib"}
    first, second = registry.register(files, card), registry.register(files, card)
    uri = registry.uri
    assert (
        main(["registry", "promote", first, "--registry", uri, "--actor", "ann", "--reason", "r1"])
        == 0
    )
    assert (
        main(["registry", "promote", second, "--registry", uri, "--actor", "bob", "--reason", "r2"])
        == 0
    )
    assert (
        main(["registry", "rollback", "--registry", uri, "--actor", "cid", "--reason", "alarm"])
        == 0
    )
    capsys.readouterr()
    assert main(["registry", "list", "--registry", uri, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["version"], r["champion"]) for r in rows] == [(first, True), (second, False)]
    assert main(["registry", "show", "--registry", uri]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == first
    assert main(["registry", "history", "--registry", uri]) == 0
    history = json.loads(capsys.readouterr().out)
    assert [(h["action"], h["actor"], h["reason"]) for h in history] == [
        ("promote", "ann", "r1"),
        ("promote", "bob", "r2"),
        ("rollback", "cid", "alarm"),
    ]
    # A version of another contract is refused by the command
    assert main(["registry", "promote", second, "--registry", uri, "--contract", "insurance"]) == 2
    assert "insurance" in capsys.readouterr().err
