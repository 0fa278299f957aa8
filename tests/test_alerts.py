"""Alert rules: the parser, the firing semantics, and where rules and firings are kept."""

from __future__ import annotations

import sqlite3

import pytest
from conftest import PAIR, store_tape
from hypothesis import given, settings
from hypothesis import strategies as st

from pairs_tui.alerts import (
    MAX_RULE_LENGTH,
    METRICS,
    Abs,
    AlertBook,
    AlertRule,
    Compare,
    Cross,
    Logic,
    Metric,
    Neg,
    Number,
    RuleError,
    RuleSpec,
    RuleState,
    load_rules,
    parse_rule,
    step,
)
from pairs_tui.engine import PairView
from pairs_tui.session import Session, SessionPlan
from pairs_tui.store import SCHEMA_VERSION, TickStore

pytestmark = pytest.mark.unit

# -- the parser ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "condition", "canonical"),
    [
        ("z > 2", Compare(Metric("z"), ">", Number(2)), "z > 2"),
        ("zscore >= 2.5", Compare(Metric("z"), ">=", Number(2.5)), "z >= 2.5"),
        ("abs(z) >= 2.5", Compare(Abs(Metric("z")), ">=", Number(2.5)), "abs(z) >= 2.5"),
        ("corr < 0.6", Compare(Metric("corr"), "<", Number(0.6)), "corr < 0.6"),
        ("adf_p > 0.05", Compare(Metric("adf_p"), ">", Number(0.05)), "adf_p > 0.05"),
        ("half_life <= 30", Compare(Metric("half_life"), "<=", Number(30)), "half_life <= 30"),
        ("price_a < 60000", Compare(Metric("price_a"), "<", Number(60000)), "price_a < 60000"),
        ("price_b == 3000", Compare(Metric("price_b"), "==", Number(3000)), "price_b == 3000"),
        ("beta > 1e-3", Compare(Metric("beta"), ">", Number(0.001)), "beta > 0.001"),
        ("z < -2", Compare(Metric("z"), "<", Number(-2)), "z < -2"),
        ("-z > 2", Compare(Neg(Metric("z")), ">", Number(2)), "-z > 2"),
        ("spread crosses 0", Cross(Metric("spread"), None, Number(0)), "spread crosses 0"),
        ("z crosses above 2", Cross(Metric("z"), "above", Number(2)), "z crosses above 2"),
        ("z CROSSES BELOW -2", Cross(Metric("z"), "below", Number(-2)), "z crosses below -2"),
        ("price_a > price_b", Compare(Metric("price_a"), ">", Metric("price_b")), None),
        (
            "z > 2 and corr > 0.8",
            Logic(
                "and",
                (Compare(Metric("z"), ">", Number(2)), Compare(Metric("corr"), ">", Number(0.8))),
            ),
            "z > 2 and corr > 0.8",
        ),
        (
            "z > 2 or z < -2 and corr > 0.8",  # and binds tighter than or
            Logic(
                "or",
                (
                    Compare(Metric("z"), ">", Number(2)),
                    Logic(
                        "and",
                        (
                            Compare(Metric("z"), "<", Number(-2)),
                            Compare(Metric("corr"), ">", Number(0.8)),
                        ),
                    ),
                ),
            ),
            "z > 2 or (z < -2 and corr > 0.8)",  # the canonical text shows how it binds
        ),
        (
            "(z > 2 or z < -2) and corr > 0.8",
            Logic(
                "and",
                (
                    Logic(
                        "or",
                        (
                            Compare(Metric("z"), ">", Number(2)),
                            Compare(Metric("z"), "<", Number(-2)),
                        ),
                    ),
                    Compare(Metric("corr"), ">", Number(0.8)),
                ),
            ),
            "(z > 2 or z < -2) and corr > 0.8",
        ),
    ],
)
def test_every_documented_form_parses(text, condition, canonical):
    rule = parse_rule(text)
    assert rule.condition == condition
    assert rule.text == (canonical or text)
    assert parse_rule(rule.text) == rule  # the canonical text means the same rule


def test_grouping_the_same_operator_is_the_same_rule():
    flat = parse_rule("z > 1 and corr > 0.5 and beta > 1")
    assert parse_rule("z > 1 and (corr > 0.5 and beta > 1)") == flat
    assert parse_rule("((z > 1 and corr > 0.5)) and beta > 1") == flat
    assert parse_rule("(z > 1 or corr > 0.5) or beta > 1").text == "z > 1 or corr > 0.5 or beta > 1"


@pytest.mark.parametrize(
    ("text", "seconds", "canonical"),
    [
        ("z > 2 cooldown 60s", 60, "z > 2 cooldown 1m"),
        ("z > 2 cooldown 90", 90, "z > 2 cooldown 90s"),
        ("z > 2 cooldown 5m", 300, "z > 2 cooldown 5m"),
        ("z > 2 cooldown 1h", 3600, "z > 2 cooldown 1h"),
        ("z > 2 cooldown 0.5s", 0.5, "z > 2 cooldown 0.5s"),
    ],
)
def test_cooldowns(text, seconds, canonical):
    rule = parse_rule(text)
    assert rule.cooldown_s == seconds and rule.text == canonical


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("zz > 2", "unknown metric 'zz' at column 1; did you mean 'z'?"),
        ("abs(corrr) < 0.5", "unknown metric 'corrr' at column 5; did you mean 'corr'?"),
        ("z > 2 and sprad < 0", "unknown metric 'sprad' at column 11; did you mean 'spread'?"),
        ("volume > 2", "unknown metric 'volume' at column 1 (metrics: z, spread, corr"),
        ("z > ", "expected a metric (z, spread, corr, ...), a number or abs(...), found the end"),
        ("z 2", "expected > >= < <= == or crosses, found '2' at column 3"),
        ("z > 2 &", "unexpected character '&' at column 7"),
        ("z > 2 and", "found the end of the rule at column 10"),
        ("(z > 2", "expected ')', found the end of the rule at column 7"),
        (
            "z > 2)",
            "expected 'and', 'or', 'cooldown' or the end of the rule, found ')' at column 6",
        ),
        ("abs z > 2", "expected '(' after abs, found 'z' at column 5"),
        ("2 > 1", "a comparison needs a metric, like z or corr at column 1"),
        ("z > 2 cooldown", "expected a duration like 60s, 5m or 1h, found the end"),
        ("z > 2 cooldown 5d", "unknown unit 'd': use s, m or h at column 17"),
        ("z > 2 cooldown 0s", "cooldown must be more than 0 and at most 7 days at column 16"),
        ("z > 1e999", "number 1e999 is too large at column 5"),
        ("z > 2 cooldown 1m and corr > 0", "cooldown comes last: expected the end of the rule"),
        ("", "empty rule"),
        ("(" * 40 + "z > 1" + ")" * 40, "nested more than 16 deep"),
        ("z > 2" + " " * 400, "rule longer than 300 characters"),
    ],
)
def test_a_bad_rule_says_what_and_which_column(text, message):
    with pytest.raises(RuleError) as error:
        parse_rule(text)
    assert message in str(error.value)


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=60))
def test_any_text_parses_or_is_a_rule_error(text):
    try:
        rule = parse_rule(text)
    except RuleError as exc:
        assert exc.column is None or 1 <= exc.column <= max(len(text), 300) + 1
    else:
        assert parse_rule(rule.text) == rule


_PIECES = [*METRICS, "abs", "(", ")", ">", ">=", "<", "<=", "==", "crosses", "above", "below"]
_PIECES += ["and", "or", "-", "2", "0.5", "1e3", "cooldown", "60s", "5m", "zscore", "zz", "#"]


@settings(max_examples=600, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=14))
def test_any_sequence_of_rule_words_parses_or_is_a_rule_error(words):
    """Near-misses are where a hand-written parser breaks: build them from its own words."""
    text = " ".join(words)
    try:
        rule = parse_rule(text)
    except RuleError as exc:
        assert exc.column is None or 1 <= exc.column <= len(text) + 1
    else:
        assert parse_rule(rule.text) == rule


# Rules typed tersely: the canonical text (spaces around operators, numbers written out)
# can be much longer than what was typed, and it is what the store keeps and loads.
_NUMBERS = st.sampled_from(["1e9", "1e15", "2", ".5", "1E3", "7e-7", "-1e12", "0.3000000000004"])
_VALUES = st.recursive(
    st.one_of(st.sampled_from([*METRICS, "zscore"]), _NUMBERS),
    lambda inner: st.one_of(inner.map("abs({})".format), inner.map("-{}".format)),
    max_leaves=2,
)
_OPS = st.sampled_from(
    [">", ">=", "<", "<=", "==", " crosses ", " crosses above ", " crosses below "]
)


def _joined(parts: list[str], op: str) -> str:
    return "(" + f" {op} ".join(parts) + ")"


_CONDITIONS = st.recursive(
    st.tuples(_VALUES, _OPS, _VALUES).map("".join),
    lambda inner: st.builds(
        _joined, st.lists(inner, min_size=2, max_size=25), st.sampled_from(["and", "or"])
    ),
    max_leaves=40,
)
_LONG_CHAINS = st.builds(  # many terse comparisons: near the limit as typed, or past it
    lambda parts, op: f" {op} ".join(parts),
    st.lists(st.tuples(_VALUES, _OPS, _VALUES).map("".join), min_size=12, max_size=40),
    st.sampled_from(["and", "or"]),
)
_COOLDOWNS = st.sampled_from(["", " cooldown 90", " cooldown 0.5m", " cooldown 1e-3s"])


@settings(max_examples=150, deadline=None)  # each run draws new ones
@given(st.tuples(st.one_of(_CONDITIONS, _LONG_CHAINS), _COOLDOWNS).map("".join))
def test_every_rule_accepted_loads_back_as_the_same_rule(text):
    """What the store keeps is the canonical text, parsed again at the next start: any
    rule parse_rule accepts must come back from it, equal and spelled the same."""
    try:
        rule = parse_rule(text)
    except RuleError:
        return
    again = parse_rule(rule.text)
    assert again == rule and again.text == rule.text


def test_a_rule_too_long_once_written_out_is_refused_at_entry():
    text = " and ".join(["z>1e9"] * 28)  # 275 characters typed
    assert len(text) <= MAX_RULE_LENGTH
    with pytest.raises(RuleError) as error:
        parse_rule(text)
    assert str(error.value) == (
        "written out in full ('z > 1000000000 and z > 1000000000 and...') the rule is 527"
        " characters long, more than the 300 a stored rule may have: shorten it"
    )
    assert error.value.column is None
    shorter = " and ".join(["z>1e9"] * 15)  # 15 * 14 + 14 * 5 = 280 written out: fine
    assert parse_rule(parse_rule(shorter).text) == parse_rule(shorter)


async def test_stored_rules_that_do_not_load_are_reported(db_path):
    """A rule in the store that no longer parses (too long, stored by an earlier version;
    a later grammar; written by hand) is reported in one line, and the others load."""
    await store_tape(db_path, 1)
    too_long = " and ".join(["z > 1000000000"] * 20)
    async with await TickStore.open(db_path) as store:
        good = await store.add_rule(PAIR, "1m", "abs(z) > 2", 0)
        long_id = await store.add_rule(PAIR, "1m", too_long, 0)
        later_id = await store.add_rule(PAIR, "5m", "z > 2 within 5m", 0)
        await store.mute_rule(good, True)
        records = await store.rules()
    rules, problems = load_rules(records)
    assert rules == [AlertRule(good, parse_rule("abs(z) > 2"), *PAIR, "1m", muted=True)]
    assert problems == [
        f"alert rule #{long_id} (BTCUSDT/ETHUSDT 1m) in the store is not used: rule longer"
        " than 300 characters at column 301: 'z > 1000000000 and z > 1000000000 and...'",
        f"alert rule #{later_id} (BTCUSDT/ETHUSDT 5m) in the store is not used: expected"
        " 'and', 'or', 'cooldown' or the end of the rule, found 'within' at column 7:"
        " 'z > 2 within 5m'",
    ]


# -- the semantics ------------------------------------------------------------------------


def firings(text: str, values: list, *, metric: str = "z", every_s: float = 1.0) -> list[int]:
    """Feed one metric's values (one update per `every_s`): the update numbers that fire."""
    rule, state, fired = parse_rule(text), RuleState(), []
    for i, value in enumerate(values):
        metrics = value if isinstance(value, dict) else {metric: value}
        state, fires = step(rule, state, metrics, int(i * every_s * 1e6))
        if fires:
            fired.append(i)
    return fired


def test_fires_on_becoming_true_and_rearms_only_after_false():
    z = [0, 1, 2.5, 3, 2.1, 1.9, 2.2, 2.2, 0, 3]
    assert firings("z > 2", z) == [2, 6, 9]
    assert firings("abs(z) > 2", [0, -2.5, -3, 2.5, 0, 2.5]) == [1, 5]  # -3 to 2.5: still true


def test_true_from_the_first_update_fires_once():
    assert firings("z > 2", [3, 3, 3]) == [0]


def test_a_missing_value_is_not_true_and_rearms():
    assert firings("z > 2", [3, None, 3, 3]) == [0, 2]


def test_cooldown_skips_rises_inside_it():
    z = [3, 0, 3, 0, 3, 3, 0, 3]  # rises at 0, 2, 4, 7 (one update a second)
    assert firings("z > 2 cooldown 3s", z) == [0, 4, 7]
    assert firings("z > 2 cooldown 5s", z) == [0, 7]
    assert firings("z > 2", z) == [0, 2, 4, 7]


def test_crosses():
    spread = [-1, -0.5, 0.5, 1, -1, -2, 0, 0, 1]
    assert firings("spread crosses 0", spread, metric="spread") == [2, 4, 8]
    assert firings("spread crosses above 0", spread, metric="spread") == [2, 8]
    assert firings("spread crosses below 0", spread, metric="spread") == [4]
    assert firings("spread crosses 0", [1, None, -1], metric="spread") == []  # no gap jumps


def test_and_or():
    both = [
        {"z": 3, "corr": 0.5},
        {"z": 3, "corr": 0.9},  # both true: fires
        {"z": 2.5, "corr": 0.95},  # still true
        {"z": 1, "corr": 0.95},  # false: re-arms
        {"z": 3, "corr": 0.95},  # fires
    ]
    assert firings("z > 2 and corr > 0.8", both) == [1, 4]
    either = [{"z": 0, "corr": 0.9}, {"z": 0, "corr": 0.5}, {"z": 3, "corr": 0.5}]
    assert firings("z > 2 or corr < 0.6", either) == [1]  # true at 1 and 2: one firing
    assert firings("corr < 0.6 and z crosses 2", either) == [2]


def test_crosses_never_measures_from_an_update_it_missed():
    """A rule not followed on an update (its pair out of view) or across a view change
    forgets its previous values: a later update cannot 'cross' from stale numbers."""
    from pairs_tui.analytics import Summary

    def at(spread: float) -> dict:
        values = dict.fromkeys(Summary.__dataclass_fields__)
        return {"1m": Summary(**(values | {"spread": spread, "timeframe": "1m"}))}

    book = AlertBook()
    book.put(AlertRule(1, parse_rule("spread crosses 0"), *PAIR, "1m"))
    other = ("SOLUSDT", "BNBUSDT")
    assert book.check(PAIR, at(-1), now_us=0, asof_us=0) == []
    assert book.check(other, at(5), now_us=1, asof_us=1) == []  # PAIR out of view
    assert book.check(PAIR, at(1), now_us=2, asof_us=2) == []  # -1 was before the gap
    assert len(book.check(PAIR, at(-1), now_us=3, asof_us=3)) == 1  # a real crossing
    book.forget_history()  # e.g. a new window
    assert book.check(PAIR, at(1), now_us=4, asof_us=4) == []


def test_the_book_reports_values_and_keeps_muted_rules_quiet():
    from conftest import PAIR as pair

    from pairs_tui.analytics import Summary

    def summary(z: float, corr: float) -> Summary:
        values = dict.fromkeys(Summary.__dataclass_fields__)
        values |= {"zscore": z, "corr": corr, "timeframe": "1m", "end_us": 60_000_000}
        return Summary(**values)

    book = AlertBook()
    book.put(AlertRule(1, parse_rule("abs(z) > 2"), *pair, "1m"))
    book.put(AlertRule(2, parse_rule("z < -2 and corr > 0.5"), *pair, "1m"))
    book.put(AlertRule(3, parse_rule("z < 0"), *pair, "1m", muted=True))
    book.put(AlertRule(4, parse_rule("z < 0"), *pair, "5m"))  # another timeframe
    book.put(AlertRule(5, parse_rule("z < 0"), "SOLUSDT", "BNBUSDT", "1m"))  # another pair
    fired = book.check(pair, {"1m": summary(-2.5, 0.7)}, now_us=1, asof_us=2)
    assert [(e.rule_id, e.value) for e in fired] == [(1, -2.5), (2, {"z": -2.5, "corr": 0.7})]
    assert {(e.bar_us, e.asof_us, e.fired_us, e.timeframe) for e in fired} == {
        (60_000_000, 2, 1, "1m")
    }
    book.put(AlertRule(3, parse_rule("z < 0"), *pair, "1m", muted=False))  # unmuted while true
    assert book.check(pair, {"1m": summary(-2.6, 0.7)}, now_us=3, asof_us=4) == []


# -- kept in the store, restored by a session ---------------------------------------------


def plan(db_path, rules=(), keep_rules=True) -> SessionPlan:
    view = PairView(*PAIR, "1s", 5, 60)
    return SessionPlan(view, db_path, None, rules=rules, keep_rules=keep_rules)


async def test_rules_and_firings_survive_a_restart(db_path):
    await store_tape(db_path, 120)
    config_rule = RuleSpec(parse_rule("price_a > 0"), PAIR, "1s")
    session = Session(plan(db_path, (config_rule,)))
    await session.start()
    added = await session.add_rule("abs(z) >= 0 cooldown 1h")
    assert added.rule.text == "abs(z) >= 0 cooldown 1h" and added.timeframe == "1s"
    with pytest.raises(RuleError, match="did you mean 'z'"):
        await session.add_rule("zz > 1")
    fired = (await session.refresh()).fired
    assert {e.rule for e in fired} == {"price_a > 0", "abs(z) >= 0 cooldown 1h"}
    assert (await session.refresh()).fired == ()  # still true: no second firing
    await session.mute(added.id, True)
    await session.stop()

    again = Session(plan(db_path, (config_rule,)))  # the config rule is not doubled
    await again.start()
    rules = again.rules()
    assert [(r.rule.text, r.muted) for r in rules] == [
        ("price_a > 0", False),
        ("abs(z) >= 0 cooldown 1h", True),
    ]
    assert [e.rule for e in await again.events()] == [e.rule for e in fired]
    stored = (await again.events())[0]
    assert stored == fired[0]
    assert [e.rule for e in (await again.refresh()).fired] == ["price_a > 0"]  # muted: quiet
    await again.remove_rule(rules[0].id)
    await again.stop()
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT rule FROM alert_rules").fetchall() == [
            ("abs(z) >= 0 cooldown 1h",)
        ]
    async with await TickStore.open(db_path) as store:  # a removed rule's id is not reused
        assert await store.add_rule(PAIR, "1m", "z > 3", 0) > 2
        assert conn.execute("SELECT count(*) FROM alert_events").fetchone() == (3,)


async def test_watch_rules_are_used_not_kept(db_path):
    await store_tape(db_path, 60)
    session = Session(plan(db_path, (RuleSpec(parse_rule("z > -100"), PAIR, "1s"),), False))
    await session.start()
    [event] = (await session.refresh()).fired
    assert event.rule_id is None and event.rule == "z > -100"
    await session.stop()
    async with await TickStore.open(db_path) as store:
        assert await store.rules() == []
        assert await store.events() == [event]


async def test_a_version_1_store_gains_the_alert_tables(db_path):
    """A store written before alerts existed opens, keeps its trades and takes rules."""
    await store_tape(db_path, 10)
    with sqlite3.connect(db_path) as conn:
        conn.execute("DROP TABLE alert_rules")
        conn.execute("DROP TABLE alert_events")
        conn.execute("DROP TABLE meta")
        conn.execute("DROP TABLE history")
        conn.execute("ALTER TABLE gaps DROP COLUMN filled_us")
        conn.execute("PRAGMA user_version = 1")
        trades = conn.execute("SELECT count(*) FROM trades").fetchone()
    async with await TickStore.open(db_path) as store:
        assert await store.add_rule(PAIR, "1m", "z > 2", 0) == 1
        assert await store.rules() != []
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT count(*) FROM trades").fetchone() == trades
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


async def test_a_rule_on_another_timeframe_gets_its_tests_computed(db_path):
    """adf_p at 1m while 1s is in view: the engine runs the 1m tests for it."""
    await store_tape(db_path, 40 * 60)  # 40 one-minute bars: enough for the ADF
    spec = RuleSpec(parse_rule("adf_p >= 0"), PAIR, "1m")
    session = Session(plan(db_path, (spec,), keep_rules=False))
    await session.start()
    snapshot = await session.refresh()
    await session.stop()
    [event] = snapshot.fired
    minute = next(g for g in snapshot.glances if g.timeframe == "1m")
    assert event.timeframe == "1m" and event.value == minute.adf_pvalue is not None
    shown_only = Session(plan(db_path))  # without the rule, 1m stays a glance
    await shown_only.start()
    glances = (await shown_only.refresh()).glances
    await shown_only.stop()
    assert next(g for g in glances if g.timeframe == "1m").adf_pvalue is None
