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


# ---- a decision repeated (a retry) against a different decision (a rival) ----------------------
def _promotions(registry: Registry) -> list[tuple[str, str]]:
    return [(h["action"], h["version"]) for h in registry.history() if h["action"] == "promote"]


def test_a_repeated_promotion_returns_the_pointer_it_wrote_and_records_one(
    registry: Registry,
) -> None:
    # GIVEN a champion, and a decision that promoted a challenger against the tag it read
    base, challenger = _register(registry), _register(registry)
    registry.promote(base, actor="t", reason="base")
    seen = registry.champion_etag()
    first = registry.promote(
        challenger, actor="retrain", reason="gate", expected_etag=seen, decision_id="run-1"
    )
    written = registry.champion_etag()
    # WHEN the same decision comes again with the same (now stale) tag, as a retry would
    again = registry.promote(
        challenger, actor="retrain", reason="gate", expected_etag=seen, decision_id="run-1"
    )
    # THEN it gets the pointer it wrote, nothing moved, and history holds one promotion of it
    assert again == first == registry.champion()
    assert registry.champion_etag() == written
    assert _promotions(registry) == [("promote", base), ("promote", challenger)]
    assert registry.history()[-1]["details"]["decision_id"] == "run-1"


def test_a_different_decision_against_a_stale_tag_is_still_a_conflict(registry: Registry) -> None:
    base, winner, rival = (_register(registry) for _ in range(3))
    registry.promote(base, actor="t", reason="base")
    seen = registry.champion_etag()
    registry.promote(winner, actor="a", reason="r", expected_etag=seen, decision_id="run-1")
    # Another decision, for another version or even for the same one, saw the old champion.
    with pytest.raises(ConcurrentUpdateError):
        registry.promote(rival, actor="b", reason="r", expected_etag=seen, decision_id="run-2")
    with pytest.raises(ConcurrentUpdateError):
        registry.promote(winner, actor="b", reason="r", expected_etag=seen, decision_id="run-2")
    # ... and without a decision id nothing is taken for a retry either
    with pytest.raises(ConcurrentUpdateError):
        registry.promote(winner, actor="a", reason="r", expected_etag=seen)
    assert registry.champion()["version"] == winner
    assert _promotions(registry) == [("promote", base), ("promote", winner)]


def test_a_first_promotion_repeated_is_not_refused_as_a_rival(registry: Registry) -> None:
    # The first retrain expects no champion at all (tag None); its retry finds its own.
    version = _register(registry)
    first = registry.promote(
        version, actor="r", reason="first", expected_etag=None, decision_id="d"
    )
    assert registry.promote(version, actor="r", reason="first", expected_etag=None, decision_id="d")
    assert registry.champion() == first
    assert _promotions(registry) == [("promote", version)]


def test_rollback_from_a_named_champion_happens_once(registry: Registry) -> None:
    # GIVEN a champion that replaced an earlier one
    first, second = _register(registry), _register(registry)
    registry.promote(first, actor="t", reason="r")
    registry.promote(second, actor="t", reason="r")
    # WHEN an operator rolls back from it twice (the first answer was lost)
    back = registry.rollback(actor="ops", reason="alarm", from_version=second)
    again = registry.rollback(actor="ops", reason="alarm", from_version=second)
    # THEN the champion went back once and stays there, with one rollback in history
    assert back == again == registry.champion()
    assert back["version"] == first and back["previous_version"] == second
    assert [h["action"] for h in registry.history()] == ["promote", "promote", "rollback"]
    # ... while a plain rollback still undoes the previous one, as documented
    assert registry.rollback(actor="ops", reason="undo")["version"] == second


def test_rollback_from_a_champion_that_was_replaced_meanwhile_moves_nothing(
    registry: Registry,
) -> None:
    first, second, third = (_register(registry) for _ in range(3))
    registry.promote(first, actor="t", reason="r")
    registry.promote(second, actor="t", reason="r")
    registry.promote(third, actor="retrain", reason="better")  # after the operator looked
    before = (registry.champion(), registry.champion_etag())
    with pytest.raises(ConcurrentUpdateError, match=f"is {third}, not {second}"):
        registry.rollback(actor="ops", reason="alarm on second", from_version=second)
    assert (registry.champion(), registry.champion_etag()) == before
    assert "rollback" not in [h["action"] for h in registry.history()]


def test_rollbacks_of_two_decisions_are_two_rollbacks(registry: Registry) -> None:
    # A caller with its own ids (one per execution): a new id is a new decision.
    first, second = _register(registry), _register(registry)
    registry.promote(first, actor="t", reason="r")
    registry.promote(second, actor="t", reason="r")
    assert registry.rollback(actor="x", reason="r", decision_id="exec-1")["version"] == first
    assert registry.rollback(actor="x", reason="r", decision_id="exec-1")["version"] == first
    assert registry.rollback(actor="x", reason="r", decision_id="exec-2")["version"] == second
    assert [h["action"] for h in registry.history()].count("rollback") == 2


def test_registry_rollback_command_from_a_version_is_safe_to_repeat(registry, capsys) -> None:  # type: ignore[no-untyped-def]
    from churnops.cli import main
    from churnops.contract import TELCO

    card = {"contract": "telco", "schema_hash": TELCO.schema_hash, "status": STATUS_ELIGIBLE}
    files = {"model.onnx": b"onnx", "model.joblib": b"joblib"}
    first, second, never = (registry.register(files, card) for _ in range(3))
    registry.promote(first, actor="t", reason="r")
    registry.promote(second, actor="t", reason="r")
    argv = ["registry", "rollback", "--registry", registry.uri, "--from-version", second]
    assert main([*argv, "--actor", "cid"]) == 0
    assert main([*argv, "--actor", "cid"]) == 0
    capsys.readouterr()
    assert registry.champion()["version"] == first
    assert [h["action"] for h in registry.history()] == ["promote", "promote", "rollback"]
    # Rolling back from a version that is not the champion says so and changes nothing
    assert main(["registry", "rollback", "--registry", registry.uri, "--from-version", never]) == 2
    err = capsys.readouterr().err
    assert f"is {first}, not {never}" in err and len(err.strip().splitlines()) == 1
    assert registry.champion()["version"] == first


@pytest.fixture
def s3_registry(aws_env) -> Registry:  # type: ignore[no-untyped-def]
    import uuid

    from churnops.aws import client

    bucket = f"registry-{uuid.uuid4().hex[:12]}"
    client("s3").create_bucket(Bucket=bucket)
    return Registry.open(f"s3://{bucket}/models")


def _on_s3_put(key_part: str, event: str, handler) -> None:  # type: ignore[no-untyped-def]
    """Register a botocore hook for PutObject calls whose key contains `key_part`: the network
    and S3 misbehaving as they do, around the real client and a real (moto) S3."""
    from churnops.aws import client

    def hook(**kwargs):  # type: ignore[no-untyped-def]
        # before-call passes the request as `params`, needs-retry as `request_dict`
        request = kwargs.get("request_dict") or kwargs.get("params") or {}
        if key_part in str(request.get("url_path") or request.get("url") or ""):
            return handler(**kwargs)
        return None

    client("s3").meta.events.register(f"{event}.s3.PutObject", hook, unique_id=event + key_part)


def test_a_retry_after_a_crash_between_pointer_and_history_records_the_promotion(
    s3_registry: Registry,
) -> None:
    from botocore.exceptions import ReadTimeoutError

    from churnops.aws import client

    registry = s3_registry
    base, challenger = _register(registry), _register(registry)
    registry.promote(base, actor="t", reason="base")
    seen = registry.champion_etag()
    # GIVEN the first attempt moves the pointer, then dies before its history entry is written
    failures = iter([True])

    def lose_the_history_write(**kwargs):  # type: ignore[no-untyped-def]
        if next(failures, False):
            raise ReadTimeoutError(endpoint_url="s3 (injected)")
        return None

    _on_s3_put("/history/", "before-call", lose_the_history_write)
    try:
        # (the timeout reaches the step as itself, so the flow's Retry can name it)
        with pytest.raises(ReadTimeoutError):
            registry.promote(
                challenger, actor="retrain", reason="gate", expected_etag=seen, decision_id="d"
            )
        assert registry.champion()["version"] == challenger
        assert _promotions(registry) == [("promote", base)]
        # WHEN the step is retried with the same input
        pointer = registry.promote(
            challenger, actor="retrain", reason="gate", expected_etag=seen, decision_id="d"
        )
    finally:
        client("s3").meta.events.unregister(
            "before-call.s3.PutObject", unique_id="before-call/history/"
        )
    # THEN it succeeds with the pointer the first attempt wrote, and history has it once
    assert pointer == registry.champion() and pointer["sequence"] == 2
    assert _promotions(registry) == [("promote", base), ("promote", challenger)]


def test_a_pointer_write_whose_answer_was_lost_is_recognised_as_its_own(
    s3_registry: Registry,
) -> None:
    from churnops.aws import client

    registry = s3_registry
    base, challenger = _register(registry), _register(registry)
    registry.promote(base, actor="t", reason="base")
    seen = registry.champion_etag()
    # GIVEN S3 applies the conditional PUT of the pointer but the SDK sends it again (as it does
    # when the answer is lost): the repeat meets the tag its own first copy changed
    repeats = iter([0])

    def send_it_again(**kwargs):  # type: ignore[no-untyped-def]
        return next(repeats, None)  # a delay means "retry"; None means "done"

    _on_s3_put("champion.json", "needs-retry", send_it_again)
    try:
        pointer = registry.promote(
            challenger, actor="retrain", reason="gate", expected_etag=seen, decision_id="d"
        )
    finally:
        client("s3").meta.events.unregister(
            "needs-retry.s3.PutObject", unique_id="needs-retrychampion.json"
        )
    assert next(repeats, "used") == "used", "the PUT was not repeated"
    assert pointer == registry.champion() and pointer["version"] == challenger
    assert _promotions(registry) == [("promote", base), ("promote", challenger)]


def test_one_decision_may_promote_and_later_roll_back_its_candidate(registry: Registry) -> None:
    # A rollout execution promotes its candidate and, when an alarm fires, rolls it back: the
    # rollback is not mistaken for a repeat of the promotion, and its own repeat is one rollback.
    base, candidate = _register(registry), _register(registry)
    registry.promote(base, actor="t", reason="base")
    seen = registry.champion_etag()
    full = {"actor": "rollout", "reason": "full", "expected_etag": seen, "decision_id": "exec-1"}
    registry.promote(candidate, **full)
    back = registry.rollback(actor="rollout", reason="alarm", decision_id="exec-1")
    assert back["version"] == base and back["action"] == "rollback"
    assert registry.rollback(actor="rollout", reason="alarm", decision_id="exec-1") == back
    # ... and a late repeat of the promotion is a conflict, not a success: the pointer moved on
    with pytest.raises(ConcurrentUpdateError):
        registry.promote(candidate, **full)
    assert [h["action"] for h in registry.history()] == ["promote", "promote", "rollback"]
