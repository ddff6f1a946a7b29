"""Rollouts in the model registry, on a local directory and on S3 (moto): a candidate beside the
champion, stage by stage, by compare-and-swap, with every step in the history and every
decision recognised when it comes again."""

from __future__ import annotations

import json
import threading
import uuid

import pytest

from churnops.errors import ChurnOpsError, NoChampionError
from churnops.registry import STATUS_ELIGIBLE, STATUS_NO_SKILL, ConcurrentUpdateError, Registry
from churnops.wiring import ROLLOUT_KEY


@pytest.fixture
def registry(store_uri: str) -> Registry:
    return Registry.open(store_uri)


def _register(registry: Registry, status: str = STATUS_ELIGIBLE) -> str:
    from churnops.contract import TELCO

    files = {"model.joblib": b"joblib", "model.onnx": b"onnx"}
    card = {"contract": "telco", "schema_hash": TELCO.schema_hash, "status": status}
    return registry.register(files, card)


@pytest.fixture
def champion_and_candidate(registry: Registry) -> tuple[str, str]:
    champion, candidate = _register(registry), _register(registry)
    registry.promote(champion, actor="t", reason="base")
    return champion, candidate


def _steps(registry: Registry) -> list[tuple[str, str | None]]:
    return [
        (h["action"], h["details"].get("stage"))
        for h in registry.history()
        if h["action"].startswith("rollout_") or h["action"] in ("promote", "rollback")
    ]


def test_a_rollout_goes_shadow_canary_full_and_promotes_its_candidate(
    registry: Registry, champion_and_candidate: tuple[str, str]
) -> None:
    champion, candidate = champion_and_candidate
    # GIVEN a candidate started beside the champion
    started = registry.start_rollout(candidate, actor="retrain", reason="gate", canary_share=0.2)
    assert (started["stage"], started["version"], started["champion_version"]) == (
        "shadow",
        candidate,
        champion,
    )
    assert started["canary_share"] == 0.2 and registry.active_rollout() == started
    # the champion pointer did not move
    assert registry.champion()["version"] == champion
    # WHEN it advances twice
    canary = registry.advance_rollout(actor="ops", reason="shadow looks fine")
    assert (canary["stage"], canary["previous_stage"]) == ("canary", "shadow")
    assert canary["rollout_id"] == started["rollout_id"]
    full = registry.advance_rollout(actor="ops", reason="canary looks fine")
    # THEN the candidate is champion, the rollout has ended, and history tells each step
    assert full["stage"] == "full" and registry.active_rollout() is None
    pointer = registry.champion()
    assert pointer["version"] == candidate and pointer["previous_version"] == champion
    assert pointer["decision_id"] == full["decision_id"]
    assert _steps(registry) == [
        ("promote", None),
        ("rollout_start", "shadow"),
        ("rollout_advance", "canary"),
        ("promote", None),
        ("rollout_advance", "full"),
    ]
    entry = registry.history()[-1]
    assert (entry["actor"], entry["reason"]) == ("ops", "canary looks fine")
    assert entry["details"]["rollout_id"] == started["rollout_id"]
    # AND the rollback of the promotion stays one command
    assert registry.rollback(actor="ops", reason="r", from_version=candidate)["version"] == champion


def test_an_abort_drops_the_candidate_records_why_and_which_alarm(
    registry: Registry, champion_and_candidate: tuple[str, str]
) -> None:
    champion, candidate = champion_and_candidate
    registry.start_rollout(candidate, actor="retrain", reason="gate")
    registry.advance_rollout(actor="ops", reason="fine")
    tag = registry.champion_etag()
    aborted = registry.abort_rollout(
        actor="rollout-sm", reason="error rate up", alarm="churnops-candidate-errors"
    )
    assert (aborted["stage"], aborted["previous_stage"]) == ("aborted", "canary")
    assert aborted["alarm"] == "churnops-candidate-errors"
    assert registry.active_rollout() is None
    assert registry.champion_etag() == tag and registry.champion()["version"] == champion
    entry = registry.history()[-1]
    assert (entry["action"], entry["actor"], entry["reason"]) == (
        "rollout_abort",
        "rollout-sm",
        "error rate up",
    )
    assert entry["details"]["alarm"] == "churnops-candidate-errors"
    # A second abort of the same rollout (two people, one alarm) is the same decision
    assert registry.abort_rollout(actor="bob", reason="me too") == aborted
    assert [s for s, _ in _steps(registry)].count("rollout_abort") == 1
    # ... nothing is left to advance, and a new rollout may start
    with pytest.raises(ChurnOpsError, match="has ended"):
        registry.advance_rollout(actor="ops", reason="r")
    again = registry.start_rollout(candidate, actor="retrain", reason="second try")
    assert again["rollout_id"] != aborted["rollout_id"] and again["sequence"] == 4


def test_a_start_is_refused_while_a_rollout_runs_or_for_the_champion(
    registry: Registry, champion_and_candidate: tuple[str, str]
) -> None:
    champion, candidate = champion_and_candidate
    with pytest.raises(ChurnOpsError, match="already the champion"):
        registry.start_rollout(champion, actor="t", reason="r")
    no_skill = _register(registry, status=STATUS_NO_SKILL)
    with pytest.raises(ChurnOpsError, match="no_skill"):
        registry.start_rollout(no_skill, actor="t", reason="r")
    with pytest.raises(ChurnOpsError, match="canary share"):
        registry.start_rollout(candidate, actor="t", reason="r", canary_share=0)
    started = registry.start_rollout(candidate, actor="t", reason="r")
    other = _register(registry)
    with pytest.raises(ChurnOpsError, match="is active"):
        registry.start_rollout(other, actor="t", reason="r")
    assert registry.rollout() == started


def test_without_a_champion_there_is_nothing_to_roll_out_beside(registry: Registry) -> None:
    version = _register(registry)
    with pytest.raises(NoChampionError):
        registry.start_rollout(version, actor="t", reason="r")
    with pytest.raises(ChurnOpsError, match="no rollout"):
        registry.abort_rollout(actor="t", reason="r")
    assert registry.rollout() is None and registry.rollout_etag() is None


def test_full_fails_cleanly_when_the_champion_changed_meanwhile(
    registry: Registry, champion_and_candidate: tuple[str, str]
) -> None:
    _, candidate = champion_and_candidate
    registry.start_rollout(candidate, actor="retrain", reason="gate")
    registry.advance_rollout(actor="ops", reason="r")
    # GIVEN someone promoted another version while the canary ran
    other = _register(registry)
    registry.promote(other, actor="ann", reason="hotfix")
    before = (registry.rollout(), registry.rollout_etag(), registry.champion())
    # WHEN the rollout is advanced to full, THEN nothing moves
    with pytest.raises(ConcurrentUpdateError, match="changed meanwhile"):
        registry.advance_rollout(actor="ops", reason="r")
    assert (registry.rollout(), registry.rollout_etag(), registry.champion()) == before
    # ... and the rollout can still be aborted
    assert registry.abort_rollout(actor="ops", reason="superseded")["stage"] == "aborted"
    assert registry.champion()["version"] == other


def test_a_repeated_start_returns_its_rollout_and_records_it_once(
    registry: Registry, champion_and_candidate: tuple[str, str]
) -> None:
    _, candidate = champion_and_candidate
    first = registry.start_rollout(candidate, actor="sm", reason="gate", decision_id="exec-1")
    tag = registry.rollout_etag()
    again = registry.start_rollout(candidate, actor="sm", reason="gate", decision_id="exec-1")
    assert again == first and registry.rollout_etag() == tag
    assert [s for s, _ in _steps(registry)].count("rollout_start") == 1
    # Another decision is refused: a rollout is active
    with pytest.raises(ChurnOpsError, match="is active"):
        registry.start_rollout(candidate, actor="sm", reason="gate", decision_id="exec-2")


def test_advancing_from_a_named_stage_happens_once(
    registry: Registry, champion_and_candidate: tuple[str, str]
) -> None:
    champion, candidate = champion_and_candidate
    rollout_id = registry.start_rollout(candidate, actor="sm", reason="gate")["rollout_id"]
    # The same step twice (its answer was lost): one advance
    canary = registry.advance_rollout(actor="ops", reason="r", from_stage="shadow")
    assert registry.advance_rollout(actor="ops", reason="r", from_stage="shadow") == canary
    assert canary["stage"] == "canary"
    # ... while another decision that saw the shadow stage is a conflict
    with pytest.raises(ConcurrentUpdateError, match="at stage canary, not shadow"):
        registry.advance_rollout(actor="b", reason="r", from_stage="shadow", decision_id="other")
    assert registry.rollout() == canary
    # The full step retried after it promoted and recorded: the same pointer, one promotion
    step = {"actor": "sm", "reason": "r", "rollout_id": rollout_id, "decision_id": "exec-1-full"}
    full = registry.advance_rollout(**step, from_stage="canary")
    assert registry.advance_rollout(**step, from_stage="canary") == full
    assert [s for s, _ in _steps(registry)] == [
        "promote",
        "rollout_start",
        "rollout_advance",
        "promote",
        "rollout_advance",
    ]
    # A late step of another decision now meets an ended rollout: refused, nothing moves
    with pytest.raises(ChurnOpsError, match="has ended"):
        registry.advance_rollout(actor="ops", reason="r", from_stage="shadow", decision_id="x")
    with pytest.raises(ConcurrentUpdateError, match="not rollout-other"):
        registry.abort_rollout(actor="ops", reason="r", rollout_id="rollout-other")
    assert registry.champion()["version"] == candidate != champion


def test_a_full_step_retried_after_it_promoted_but_before_its_record_finishes(
    registry: Registry, champion_and_candidate: tuple[str, str]
) -> None:
    # GIVEN the full step promoted the candidate and died before it wrote the rollout pointer
    # (as a Lambda timing out after the champion write would)
    _, candidate = champion_and_candidate
    rollout = registry.start_rollout(candidate, actor="sm", reason="gate")
    registry.advance_rollout(actor="sm", reason="r")
    canary = registry.rollout()
    registry.promote(
        candidate,
        actor="sm",
        reason="r",
        expected_etag=canary["champion_etag"],
        decision_id="exec-1-full",
    )
    # WHEN the step is retried with its decision id
    full = registry.advance_rollout(actor="sm", reason="r", decision_id="exec-1-full")
    # THEN it ends the rollout, with one promotion of the candidate in history; an abort now
    # says how to roll back instead of dropping a champion
    assert full["stage"] == "full" and full["rollout_id"] == rollout["rollout_id"]
    promotions = [h for h in registry.history() if h["action"] == "promote"]
    assert [h["version"] for h in promotions][-1] == candidate and len(promotions) == 2
    with pytest.raises(ChurnOpsError, match="rollback --from-version"):
        registry.abort_rollout(actor="ops", reason="r", decision_id="late")


def test_an_abort_of_a_candidate_promoted_meanwhile_is_refused(
    registry: Registry, champion_and_candidate: tuple[str, str]
) -> None:
    _, candidate = champion_and_candidate
    registry.start_rollout(candidate, actor="sm", reason="gate")
    registry.promote(candidate, actor="ann", reason="by hand")
    with pytest.raises(ConcurrentUpdateError, match="already the champion"):
        registry.abort_rollout(actor="ops", reason="r")
    assert registry.active_rollout() is not None


def test_concurrent_starts_exactly_one_wins(
    registry: Registry, champion_and_candidate: tuple[str, str]
) -> None:
    # GIVEN several challengers that all read "no active rollout"
    challengers = [_register(registry) for _ in range(5)]
    barrier = threading.Barrier(len(challengers))
    outcomes: dict[str, str] = {}

    def race(version: str) -> None:
        barrier.wait()
        try:
            registry.start_rollout(version, actor="t", reason="race")
            outcomes[version] = "won"
        except ConcurrentUpdateError:
            outcomes[version] = "lost"
        except ChurnOpsError as err:
            assert "is active" in str(err)
            outcomes[version] = "refused"

    threads = [threading.Thread(target=race, args=(v,)) for v in challengers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # THEN one rollout exists, it is the winner's, and history has one start
    [winner] = [v for v, outcome in outcomes.items() if outcome == "won"]
    assert registry.rollout()["version"] == winner and registry.rollout()["sequence"] == 1
    assert [s for s, _ in _steps(registry)].count("rollout_start") == 1


def test_an_advance_against_a_stale_rollout_tag_is_a_conflict(
    registry: Registry, champion_and_candidate: tuple[str, str]
) -> None:
    # A writer that read the pointer before another one replaced it loses the swap.
    _, candidate = champion_and_candidate
    registry.start_rollout(candidate, actor="t", reason="r")
    stale_record, stale_tag = registry._pointer_and_etag(ROLLOUT_KEY)
    registry.abort_rollout(actor="ops", reason="alarm", alarm="a")
    record = registry._next_rollout(
        stale_record, "canary", actor="late", reason="r", action="rollout_advance"
    )
    with pytest.raises(ConcurrentUpdateError, match=r"rollout pointer .* changed meanwhile"):
        registry._write_rollout(record | {"decision_id": "late-1"}, stale_tag)
    assert registry.rollout()["stage"] == "aborted"


# ---- the command line ---------------------------------------------------------------------------
def _documents(out: str) -> list[dict]:
    """The JSON documents a run of commands printed, one after another."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while out[at:].strip():
        document, at = decoder.raw_decode(out, len(out) - len(out[at:].lstrip()))
        found.append(document)
    return found


def test_registry_rollout_commands_round_trip(registry, capsys) -> None:  # type: ignore[no-untyped-def]
    from churnops.cli import main

    champion, candidate = _register(registry), _register(registry)
    registry.promote(champion, actor="t", reason="base")
    uri = registry.uri
    base = ["registry", "rollout"]
    assert main([*base, "status", "--registry", uri]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "champion": champion,
        "active": False,
        "rollout": None,
    }
    argv = [*base, "start", candidate, "--registry", uri, "--canary-share", "0.25"]
    assert main([*argv, "--actor", "ann", "--reason", "gate passed"]) == 0
    started = json.loads(capsys.readouterr().out)
    assert (started["stage"], started["canary_share"], started["actor"]) == ("shadow", 0.25, "ann")
    assert main([*base, "advance", "--registry", uri, "--from-stage", "shadow"]) == 0
    assert main([*base, "advance", "--registry", uri, "--from-stage", "shadow"]) == 0
    capsys.readouterr()
    assert main([*base, "status", "--registry", uri]) == 0
    status = json.loads(capsys.readouterr().out)
    assert (status["active"], status["rollout"]["stage"]) == (True, "canary")
    abort = [*base, "abort", "--registry", uri, "--alarm", "candidate-errors"]
    assert main([*abort, "--actor", "cid", "--reason", "errors"]) == 0
    assert main([*abort, "--actor", "cid", "--reason", "errors"]) == 0
    first, second = _documents(capsys.readouterr().out)
    assert first == second == registry.rollout()
    assert first["stage"] == "aborted" and first["alarm"] == "candidate-errors"
    assert registry.champion()["version"] == champion
    assert main(["registry", "history", "--registry", uri]) == 0
    history = json.loads(capsys.readouterr().out)
    assert [(h["action"], h["actor"]) for h in history] == [
        ("promote", "t"),
        ("rollout_start", "ann"),
        ("rollout_advance", history[2]["actor"]),
        ("rollout_abort", "cid"),
    ]
    # A refused step is one line on stderr and exit 2
    assert main([*base, "advance", "--registry", uri]) == 2
    err = capsys.readouterr().err
    assert "has ended" in err and len(err.strip().splitlines()) == 1
    # the existing commands are untouched by a rollout record
    assert main(["registry", "list", "--registry", uri, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["version"], r["champion"]) for r in rows] == [(champion, True), (candidate, False)]


# ---- S3 misbehaving as it does ----------------------------------------------------------------
@pytest.fixture
def s3_registry(aws_env) -> Registry:  # type: ignore[no-untyped-def]
    from churnops.aws import client

    bucket = f"registry-{uuid.uuid4().hex[:12]}"
    client("s3").create_bucket(Bucket=bucket)
    return Registry.open(f"s3://{bucket}/models")


def test_a_rollout_write_whose_answer_was_lost_is_recognised_as_its_own(
    s3_registry: Registry,
) -> None:
    from churnops.aws import client

    registry = s3_registry
    champion, candidate = _register(registry), _register(registry)
    registry.promote(champion, actor="t", reason="base")
    registry.start_rollout(candidate, actor="sm", reason="gate")
    # GIVEN S3 applies the conditional PUT of the rollout pointer but the SDK sends it again
    repeats = iter([0])

    def send_it_again(**kwargs):  # type: ignore[no-untyped-def]
        request = kwargs.get("request_dict") or {}
        if ROLLOUT_KEY not in str(request.get("url_path") or request.get("url") or ""):
            return None
        return next(repeats, None)  # a delay means "retry"; None means "done"

    s3 = client("s3")
    s3.meta.events.register("needs-retry.s3.PutObject", send_it_again, unique_id="lost-answer")
    try:
        canary = registry.advance_rollout(actor="sm", reason="r", decision_id="exec-1-canary")
    finally:
        s3.meta.events.unregister("needs-retry.s3.PutObject", unique_id="lost-answer")
    # THEN the repeat that met its own write is a success, recorded once
    assert next(repeats, "used") == "used", "the PUT was not repeated"
    assert canary == registry.rollout() and canary["stage"] == "canary"
    assert [s for s, _ in _steps(registry)].count("rollout_advance") == 1
