"""Alert rules: a small language parsed into an AST, and an evaluator with hysteresis.

A rule such as `abs(z) > 2 and corr > 0.8 cooldown 60s` is tokenised and parsed by
recursive descent; nothing the user types is ever evaluated as Python. Every mistake is a
`RuleError` that names the column of the offending token.

Semantics: a rule is evaluated on every analytics update of its pair and timeframe. It
fires when it *becomes* true (edge-triggered) and re-arms only once it has been false
again; with a cooldown it fires at most once per cooldown (a rise inside the cooldown is
skipped, not delayed). `a crosses above b` is true on the update where a goes from <= b
to > b, `crosses below` the reverse, `crosses` either. A metric that does not exist yet
(too few bars) makes its comparison false.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, TypeAlias

from pairs_tui.model import AlertEvent, AlertValue, RuleRecord, iso

if TYPE_CHECKING:  # the config loader parses rules; it need not import numpy for that
    from pairs_tui.analytics import Summary

# the metric names a rule may use, and the aliases that mean the same
METRICS = ("z", "spread", "corr", "beta", "adf_p", "half_life", "price_a", "price_b")
ALIASES = {"zscore": "z"}
MAX_RULE_LENGTH = 300
MAX_DEPTH = 16  # nested parentheses / abs(): deep enough for anyone, bounded for the parser
_UNITS = {"s": 1, "m": 60, "h": 3600}
_KEYWORDS = {"and", "or", "abs", "crosses", "above", "below", "cooldown"}
_COMPARISONS = (">=", "<=", "==", ">", "<")


class RuleError(ValueError):
    """A rule that cannot be parsed; `column` is 1-based, None when no one column is wrong
    (a rule too long once written out)."""

    def __init__(self, message: str, column: int | None, hint: str = "") -> None:
        where = "" if column is None else f" at column {column}"
        super().__init__(f"{message}{where}{hint}")
        self.column = column


# -- the syntax tree ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Metric:
    name: str


@dataclass(frozen=True, slots=True)
class Number:
    value: float


@dataclass(frozen=True, slots=True)
class Abs:
    arg: Value


@dataclass(frozen=True, slots=True)
class Neg:
    arg: Value


Value: TypeAlias = Metric | Number | Abs | Neg


@dataclass(frozen=True, slots=True)
class Compare:
    left: Value
    op: str  # one of _COMPARISONS
    right: Value


@dataclass(frozen=True, slots=True)
class Cross:
    left: Value
    direction: str | None  # "above", "below", or None for either
    right: Value


@dataclass(frozen=True, slots=True)
class Logic:
    op: str  # "and" / "or"
    parts: tuple[Condition, ...]


Condition: TypeAlias = Compare | Cross | Logic


@dataclass(frozen=True, slots=True)
class Rule:
    condition: Condition
    cooldown_s: float = 0.0

    @property
    def text(self) -> str:
        """The canonical spelling: what lists, logs and the store show."""
        text = _show(self.condition)
        if self.cooldown_s:
            text += f" cooldown {_duration(self.cooldown_s)}"
        return text

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metrics the rule reads, in order of appearance."""
        return tuple(dict.fromkeys(_metrics(self.condition)))

    def __str__(self) -> str:
        return self.text


def _number(value: float) -> str:
    text = repr(float(value))
    return text.removesuffix(".0") if "e" not in text else text


def _duration(seconds: float) -> str:
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{_number(seconds)}s"


def _show(node: Condition | Value, parent: str | None = None) -> str:
    match node:
        case Metric(name):
            return name
        case Number(value):
            return _number(value)
        case Abs(arg):
            return f"abs({_show(arg)})"
        case Neg(arg):
            return f"-{_show(arg)}"
        case Compare(left, op, right):
            return f"{_show(left)} {op} {_show(right)}"
        case Cross(left, direction, right):
            how = f"crosses {direction}" if direction else "crosses"
            return f"{_show(left)} {how} {_show(right)}"
        case Logic(op, parts):
            text = f" {op} ".join(_show(p, op) for p in parts)
            return f"({text})" if parent is not None and parent != op else text
    raise AssertionError(node)


def _metrics(node: Condition | Value) -> Iterator[str]:
    match node:
        case Metric(name):
            yield name
        case Abs(arg) | Neg(arg):
            yield from _metrics(arg)
        case Compare(left, _, right) | Cross(left, _, right):
            yield from _metrics(left)
            yield from _metrics(right)
        case Logic(_, parts):
            for part in parts:
                yield from _metrics(part)


# -- the parser ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "number", "word", "op", "(", ")", "-", "end"
    text: str
    column: int


_TOKEN = re.compile(
    r"(?P<space>\s+)"
    r"|(?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)"
    r"|(?P<word>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>>=|<=|==|>|<)"
    r"|(?P<paren>[()])"
    r"|(?P<minus>-)"
)


def _tokens(text: str) -> list[_Token]:
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise RuleError(f"unexpected character {text[pos]!r}", pos + 1)
        kind = m.lastgroup or ""
        if kind != "space":
            word = m.group()
            kind = {"paren": word, "minus": "-"}.get(kind, kind)
            out.append(_Token(kind, word.lower() if kind == "word" else word, pos + 1))
        pos = m.end()
    out.append(_Token("end", "", len(text) + 1))
    return out


class _Parser:
    """rule  := or ["cooldown" duration]
    or    := and ("or" and)*
    and   := term ("and" term)*
    term  := "(" or ")" | value (CMP value | "crosses" ["above" | "below"] value)
    value := "-" value | NUMBER | METRIC | "abs" "(" value ")"
    """

    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.i = 0
        self.depth = 0

    @property
    def token(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        token = self.token
        self.i += 1
        return token

    def word(self, *words: str) -> bool:
        return self.token.kind == "word" and self.token.text in words

    def expect(self, kind: str, what: str) -> _Token:
        if self.token.kind != kind:
            raise self.error(f"expected {what}")
        return self.take()

    def error(self, message: str) -> RuleError:
        token = self.token
        found = "the end of the rule" if token.kind == "end" else repr(token.text)
        return RuleError(f"{message}, found {found}", token.column)

    def nest(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise RuleError(f"nested more than {MAX_DEPTH} deep", self.token.column)

    def rule(self) -> Rule:
        if self.token.kind == "end":
            raise RuleError("empty rule: type one like abs(z) > 2", 1)
        condition = self.either()
        cooldown = 0.0
        if self.word("cooldown"):
            self.take()
            cooldown = self.duration()
            if self.token.kind != "end":
                raise self.error("cooldown comes last: expected the end of the rule")
        if self.token.kind != "end":
            raise self.error("expected 'and', 'or', 'cooldown' or the end of the rule")
        return Rule(condition, cooldown)

    def duration(self) -> float:
        number = self.expect("number", "a duration like 60s, 5m or 1h")
        seconds = float(number.text)
        unit = self.token
        if unit.kind == "word" and unit.column == number.column + len(number.text):
            if unit.text not in _UNITS:
                raise RuleError(f"unknown unit {unit.text!r}: use s, m or h", unit.column)
            seconds *= _UNITS[self.take().text]
        if not 0 < seconds <= 7 * 86400:
            raise RuleError("cooldown must be more than 0 and at most 7 days", number.column)
        return seconds

    def either(self) -> Condition:
        return self.chain("or", self.both)

    def both(self) -> Condition:
        return self.chain("and", self.term)

    def chain(self, op: str, operand: Callable[[], Condition]) -> Condition:
        """`x op y op z` as one flat Logic: `(x op y) op z` is the same rule, and so is
        its canonical text."""
        parts: list[Condition] = []
        while True:
            part = operand()
            parts += part.parts if isinstance(part, Logic) and part.op == op else (part,)
            if not self.word(op):
                break
            self.take()
        return parts[0] if len(parts) == 1 else Logic(op, tuple(parts))

    def term(self) -> Condition:
        if self.token.kind == "(":
            self.take()
            self.nest()
            inner = self.either()
            self.expect(")", "')'")
            self.depth -= 1
            return inner
        start = self.token
        left = self.value()
        if self.token.kind == "op":
            op = self.take().text
            right = self.value()
            condition: Condition = Compare(left, op, right)
        elif self.word("crosses"):
            self.take()
            direction = self.take().text if self.word("above", "below") else None
            right = self.value()
            condition = Cross(left, direction, right)
        else:
            raise self.error("expected > >= < <= == or crosses")
        if not any(_metrics(condition)):
            raise RuleError("a comparison needs a metric, like z or corr", start.column)
        return condition

    def value(self) -> Value:
        token = self.token
        if token.kind == "-":
            self.take()
            self.nest()
            inner = self.value()
            self.depth -= 1
            return Number(-inner.value) if isinstance(inner, Number) else Neg(inner)
        if token.kind == "number":
            value = float(self.take().text)
            if not math.isfinite(value):
                raise RuleError(f"number {token.text} is too large", token.column)
            return Number(value)
        if token.kind == "word" and token.text == "abs":
            self.take()
            self.expect("(", "'(' after abs")
            self.nest()
            inner = self.value()
            self.expect(")", "')'")
            self.depth -= 1
            return Abs(inner)
        if token.kind == "word" and token.text not in _KEYWORDS:
            name = ALIASES.get(token.text, token.text)
            if name not in METRICS:
                raise RuleError(
                    f"unknown metric {token.text!r}", token.column, _suggest(token.text)
                )
            self.take()
            return Metric(name)
        raise self.error("expected a metric (z, spread, corr, ...), a number or abs(...)")


def _suggest(word: str) -> str:
    close = difflib.get_close_matches(word, [*METRICS, *ALIASES], n=1, cutoff=0.5)
    known = ", ".join(METRICS)
    return f"; did you mean {close[0]!r}?" if close else f" (metrics: {known})"


def parse_rule(text: str) -> Rule:
    """The rule, or a `RuleError` that says what is wrong and where.

    A rule is kept (in the store, in logs) as its canonical text, which is parsed again at
    the next start, so a rule is accepted only if that text parses back to it: within
    MAX_RULE_LENGTH once written out in full (`z>1e9` is `z > 1000000000`), not only as
    typed. Every rule accepted here loads again."""
    if len(text) > MAX_RULE_LENGTH:
        raise RuleError(f"rule longer than {MAX_RULE_LENGTH} characters", MAX_RULE_LENGTH + 1)
    rule = _Parser(text).rule()
    canonical = rule.text
    if len(canonical) > MAX_RULE_LENGTH:
        raise RuleError(
            f"written out in full ({_clip(canonical)}) the rule is {len(canonical)}"
            f" characters long, more than the {MAX_RULE_LENGTH} a stored rule may have:"
            " shorten it",
            None,
        )
    return rule


def _clip(text: str, most: int = 40) -> str:
    return repr(text if len(text) <= most else text[: most - 3] + "...")


# -- evaluation ---------------------------------------------------------------------------
Metrics: TypeAlias = Mapping[str, float | None]


def metrics_of(summary: Summary) -> dict[str, float | None]:
    """The values a rule can read, from one analytics summary (half-life in bars)."""
    return {
        "z": summary.zscore,
        "spread": summary.spread,
        "corr": summary.corr,
        "beta": summary.beta,
        "adf_p": summary.adf_pvalue,
        "half_life": summary.half_life,
        "price_a": summary.price_a,
        "price_b": summary.price_b,
    }


def _value(node: Value, metrics: Metrics) -> float | None:
    match node:
        case Metric(name):
            return metrics.get(name)
        case Number(value):
            return value
        case Abs(arg):
            inner = _value(arg, metrics)
            return None if inner is None else abs(inner)
        case Neg(arg):
            inner = _value(arg, metrics)
            return None if inner is None else -inner
    raise AssertionError(node)


_COMPARE = {
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    "==": lambda a, b: a == b,
}


def holds(condition: Condition, now: Metrics, before: Metrics | None) -> bool:
    """Is the condition true on this update (`before`: the previous update's metrics)?"""
    match condition:
        case Compare(left, op, right):
            a, b = _value(left, now), _value(right, now)
            return a is not None and b is not None and _COMPARE[op](a, b)
        case Cross(left, direction, right):
            if before is None:
                return False
            a0, b0 = _value(left, before), _value(right, before)
            a1, b1 = _value(left, now), _value(right, now)
            if a0 is None or b0 is None or a1 is None or b1 is None:
                return False
            up = a0 <= b0 and a1 > b1
            down = a0 >= b0 and a1 < b1
            return {"above": up, "below": down, None: up or down}[direction]
        case Logic("and", parts):
            return all(holds(p, now, before) for p in parts)
        case Logic(_, parts):
            return any(holds(p, now, before) for p in parts)
    raise AssertionError(condition)


@dataclass(frozen=True, slots=True)
class RuleState:
    armed: bool = True
    last_fired_us: int | None = None
    before: Metrics | None = None


def step(rule: Rule, state: RuleState, now: Metrics, now_us: int) -> tuple[RuleState, bool]:
    """One update: the next state, and whether the rule fires on it."""
    true = holds(rule.condition, now, state.before)
    cooled = state.last_fired_us is None or now_us - state.last_fired_us >= rule.cooldown_s * 1e6
    fires = true and state.armed and cooled
    return RuleState(
        armed=not true,
        last_fired_us=now_us if fires else state.last_fired_us,
        before=dict(now),
    ), fires


def fired_value(rule: Rule, metrics: Metrics) -> AlertValue:
    """What made the rule true: the metric's value, or each metric's for a rule that
    reads several."""
    names = rule.metrics
    if len(names) == 1:
        return metrics.get(names[0])
    return {name: metrics.get(name) for name in names}


# -- rules in use -------------------------------------------------------------------------
WATCHLIST = ("*", "*")  # the pair of a rule set on every pair of the watchlist


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """A rule from the config file or the command line, before it has an id."""

    rule: Rule
    pair: tuple[str, str]  # or WATCHLIST
    timeframe: str


@dataclass(frozen=True, slots=True)
class AlertRule:
    """A rule set on a pair (or on the whole watchlist) and timeframe. `id` is the
    store's; rules given to `watch` only live in memory and have negative ids."""

    id: int
    rule: Rule
    symbol_a: str
    symbol_b: str
    timeframe: str
    muted: bool = False

    @property
    def pair(self) -> tuple[str, str]:
        return self.symbol_a, self.symbol_b

    @property
    def on_watchlist(self) -> bool:
        return self.pair == WATCHLIST

    @property
    def target(self) -> str:
        return target_text(self.pair)


def target_text(pair: tuple[str, str]) -> str:
    """What a rule watches, in words: `BTCUSDT/ETHUSDT` or `watchlist`."""
    return "watchlist" if pair == WATCHLIST else f"{pair[0]}/{pair[1]}"


def load_rules(records: Iterable[RuleRecord]) -> tuple[list[AlertRule], list[str]]:
    """The stored rules that parse, and one line for each that does not, to tell the
    user: a rule from a later version's grammar, written by hand, or stored by a version
    that let rules too long to load back in. Those stay in the store, unused."""
    rules, problems = [], []
    for record in records:
        try:
            rule = parse_rule(record.rule)
        except RuleError as exc:
            where = target_text((record.symbol_a, record.symbol_b))
            problems.append(
                f"alert rule #{record.id} ({where} {record.timeframe}) in the store is not"
                f" used: {exc}: {_clip(record.rule)}"
            )
            continue
        rules.append(
            AlertRule(
                record.id,
                rule,
                record.symbol_a,
                record.symbol_b,
                record.timeframe,
                record.muted,
            )
        )
    return rules, problems


Summaries = Mapping[str, "Summary"]  # one update of a pair: its numbers per timeframe


@dataclass
class AlertBook:
    """The rules in force and their states (one per rule and pair): fed summaries,
    returns firings."""

    rules: dict[int, AlertRule] = field(default_factory=dict)
    states: dict[tuple[int, tuple[str, str]], RuleState] = field(default_factory=dict)

    def put(self, rule: AlertRule) -> None:
        """A new rule starts armed; a known one (muted, unmuted) keeps its states, so
        unmuting never fires stale edges."""
        self.rules[rule.id] = rule

    def drop(self, rule_id: int) -> None:
        self.rules.pop(rule_id, None)
        for key in [k for k in self.states if k[0] == rule_id]:
            del self.states[key]

    def forget_history(self) -> None:
        """The next update has no previous one to cross from (a new view or pair)."""
        for key, state in self.states.items():
            self.states[key] = replace(state, before=None)

    def check(
        self,
        pair: tuple[str, str],
        summaries: Summaries,
        *,
        now_us: int,
        asof_us: int | None,
    ) -> list[AlertEvent]:
        """Evaluate the rules set on this pair on one update of it."""
        events = []
        for alert in self.rules.values():
            if alert.on_watchlist:
                continue
            if alert.pair != pair or alert.timeframe not in summaries:
                # not followed on this update: a later one must not cross from stale values
                key = (alert.id, alert.pair)
                if key in self.states:
                    self.states[key] = replace(self.states[key], before=None)
                continue
            events += self._step(alert, pair, summaries[alert.timeframe], now_us, asof_us)
        return events

    def check_watchlist(
        self, pairs: Mapping[tuple[str, str], Summaries], *, now_us: int, asof_us: int | None
    ) -> list[AlertEvent]:
        """Evaluate the watchlist's rules on one ranking of its pairs: each pair is
        followed on its own (its own edge, its own cooldown)."""
        events = []
        for alert in self.rules.values():
            if not alert.on_watchlist:
                continue
            for pair, summaries in pairs.items():
                summary = summaries.get(alert.timeframe)
                if summary is not None:
                    events += self._step(alert, pair, summary, now_us, asof_us)
        return events

    def _step(
        self,
        alert: AlertRule,
        pair: tuple[str, str],
        summary: Summary,
        now_us: int,
        asof_us: int | None,
    ) -> list[AlertEvent]:
        metrics = metrics_of(summary)
        before = self.states.get((alert.id, pair), RuleState())
        state, fires = step(alert.rule, before, metrics, now_us)
        if alert.muted:  # followed, so unmuting never reports a stale rise; never fired
            state, fires = replace(state, last_fired_us=before.last_fired_us), False
        self.states[alert.id, pair] = state
        if not fires:
            return []
        return [
            AlertEvent(
                rule_id=alert.id if alert.id > 0 else None,
                rule=alert.rule.text,
                symbol_a=pair[0],
                symbol_b=pair[1],
                timeframe=alert.timeframe,
                fired_us=now_us,
                bar_us=summary.end_us,
                asof_us=asof_us,
                value=fired_value(alert.rule, metrics),
            )
        ]


def value_text(value: AlertValue) -> str:
    """`z=+2.13` style: what a toast or a log row says made the rule fire."""

    def one(x: float | None) -> str:
        return "-" if x is None else f"{x:.6g}"

    if isinstance(value, dict):
        return " ".join(f"{k}={one(v)}" for k, v in value.items())
    return one(value)


def event_record(event: AlertEvent) -> dict[str, object]:
    """One firing as a JSON object: what `watch` prints and `alerts --json` lists."""
    return {
        "time": iso(event.fired_us),
        "pair": event.pair,
        "timeframe": event.timeframe,
        "rule": event.rule,
        "value": event.value,
        "bar": iso(event.bar_us),
        "asof": iso(event.asof_us),
        "rule_id": event.rule_id,
    }
