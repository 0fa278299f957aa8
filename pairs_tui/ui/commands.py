"""The command palette: typed commands (`window 60`, `pair solusdt bnbusdt`) and the
fixed ones, all as `category: action`.

`interpret` is pure: it turns what was typed into suggestions that carry a Textual
action string (run by the app) or the reason the arguments are wrong, so the palette
can show why instead of doing nothing.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, cast

from textual.command import DiscoveryHit, Hit, Hits, Provider

from pairs_tui.alerts import AlertRule, RuleError, parse_rule
from pairs_tui.backtest import HEDGES, BacktestParams
from pairs_tui.model import (
    REFRESH_RANGE,
    TIMEFRAMES,
    SymbolError,
    normalise_symbols,
    one_of,
    symbol_list,
)
from pairs_tui.session import export_target

if TYPE_CHECKING:
    from pairs_tui.ui.app import PairsApp


@dataclass(frozen=True, slots=True)
class Suggestion:
    title: str  # "category: action"
    help: str
    action: str | None = None  # a Textual action on the app; None: `help` says what is wrong


FIXED = (
    *(
        Suggestion(f"view: timeframe {tf}", f"bars of {tf} (key {i})", f"timeframe({tf!r})")
        for i, tf in enumerate(TIMEFRAMES, 1)
    ),
    Suggestion("view: window -", "shorter z-score and correlation window (key [)", "window(-1)"),
    Suggestion("view: window +", "longer z-score and correlation window (key ])", "window(1)"),
    Suggestion(
        "view: lookback -", "fewer bars for the hedge ratio and tests (key -)", "lookback(-1)"
    ),
    Suggestion(
        "view: lookback +", "more bars for the hedge ratio and tests (key +)", "lookback(1)"
    ),
    Suggestion("display: pause / resume", "freeze the screen; recording goes on (space)", "pause"),
    Suggestion("display: live", "leave the inspection cursor (esc)", "live"),
    Suggestion("display: lean mode on / off", "monochrome charts for slow links", "lean"),
    Suggestion("display: refresh now", "redraw from the store at once", "redraw"),
    Suggestion("export: bars and analytics CSV", "into the export directory (key e)", "export"),
    Suggestion("watchlist: scanner", "every pair of the watchlist ranked (key w)", "scanner"),
    Suggestion("backtest: run", "the z rule on every stored bar of this view (key b)", "backtest"),
    Suggestion("app: help", "every key and command (key ?)", "help"),
)

# what to type for commands that take an argument, shown while browsing
TYPED = (
    ("pair", "view: pair A B", "switch pair: type `pair solusdt bnbusdt`"),
    ("window", "view: window N", "set W exactly: type `window 60`"),
    ("lookback", "view: lookback N", "set L exactly: type `lookback 1000`"),
    ("refresh", "display: refresh every S seconds", "type `refresh 2` (0.25 to 5)"),
    ("theme", "display: theme NAME", "type `theme nord`"),
    ("export", "export: bars / analytics CSV to PATH", "type `export analytics ~/z.csv`"),
    ("alert", "alerts: add a rule", "type `alert abs(z) > 2` (on this pair and timeframe)"),
    (
        "alert",
        "alerts: add a rule on every watchlist pair",
        "type `alert abs(z) > 2 on watchlist` (at this timeframe)",
    ),
    ("watchlist", "watchlist: add / remove", "type `watchlist add solusdt` (or remove)"),
    ("alerts", "alerts: list, remove, mute", "type `alerts` to list the rules with actions"),
    (
        "backtest",
        "backtest: set the rule and run",
        "type `backtest entry 2 exit 0.5 stop 4 fee 5 hedge kalman` (any of them)",
    ),
    ("hedge", "backtest: hedge the stats panel shows", f"type `hedge {'|'.join(HEDGES)}`"),
)


def interpret(
    query: str,
    themes: Collection[str],
    rules: Sequence[AlertRule] = (),
    watchlist: Sequence[str] = (),
    trading: BacktestParams | None = None,
) -> Iterator[Suggestion]:
    """Suggestions for a typed command with arguments; nothing when the first word is
    not one of ours (the fuzzy search over the fixed commands covers that). `rules` are
    the alert rules `alerts` lists, `watchlist` the symbols `watchlist` changes, `trading`
    the z rule `backtest` and `hedge` change."""
    words = query.split()
    if not words:
        return
    verb, args = words[0].lower(), words[1:]
    if verb in ("backtest", "hedge") and trading is not None:
        yield _backtest(verb, args, trading)
    elif verb == "watchlist":
        yield _watchlist(args, watchlist)
    elif verb == "alert":
        yield _alert(query.strip()[len(words[0]) :].strip(), rules)
    elif verb == "alerts":
        yield from _alerts(args, rules)
    elif verb == "pair":
        yield _pair(args)
    elif verb in ("window", "lookback"):
        yield _count(verb, args)
    elif verb == "refresh" and args:
        yield _refresh(args)
    elif verb == "theme" and args:
        yield from _theme(args, themes)
    elif verb == "export" and args:
        yield _export(args)
    elif verb in ("timeframe", "tf") and args:
        tf = args[0].lower()
        if tf in TIMEFRAMES:
            yield Suggestion(f"view: timeframe {tf}", f"bars of {tf}", f"timeframe({tf!r})")
        else:
            yield _wrong(
                f"view: timeframe {tf}", f"unknown timeframe {tf!r}: use {one_of(TIMEFRAMES)}"
            )


_RULE_ACTIONS = ("remove", "mute", "unmute")


def _alert(text: str, rules: Sequence[AlertRule]) -> Suggestion:
    """`alert RULE` adds; `alert remove|mute|unmute N` acts on rule #N."""
    if not text:
        return _wrong("alerts: add RULE", "type a rule: alert abs(z) > 2 (see docs/alerts.md)")
    words = text.split()
    if words[0].lower() in _RULE_ACTIONS:
        verb = words[0].lower()
        number = words[1].lstrip("#") if len(words) == 2 else ""
        by_id = {r.id: r for r in rules}
        if not number.isdigit() or int(number) not in by_id:
            known = ", ".join(f"#{i}" for i in by_id) or "none yet"
            return _wrong(f"alerts: {verb} {' '.join(words[1:])}", f"no such rule (rules: {known})")
        return _rule_action(verb, by_id[int(number)])
    on_watchlist = bool(_ON_WATCHLIST.search(text))
    text = _ON_WATCHLIST.sub("", text)
    try:
        rule = parse_rule(text)
    except RuleError as exc:
        return _wrong(f"alerts: add {text}", f"cannot add: {exc}")
    cooldown = f", then quiet for {rule.cooldown_s:g} s" if rule.cooldown_s else ""
    where = " on watchlist" if on_watchlist else ""
    each = "on each watchlist pair " if on_watchlist else ""
    return Suggestion(
        f"alerts: add {rule.text}{where}",
        f"fires {each}when it becomes true, re-arms once false{cooldown}",
        f"add_alert({rule.text!r}{', True' if on_watchlist else ''})",
    )


_ON_WATCHLIST = re.compile(r"\s+on\s+watchlist\s*$", re.IGNORECASE)


def _watchlist(args: list[str], watchlist: Sequence[str]) -> Suggestion:
    """`watchlist add SYM...` / `watchlist remove SYM...`; bare, what is on it."""
    verb = args[0].lower() if args else ""
    listed = ", ".join(watchlist) or "empty"
    if verb not in ("add", "remove"):
        return Suggestion(
            f"watchlist: scanner ({len(watchlist)} symbols: {listed})",
            "type `watchlist add solusdt` or `watchlist remove solusdt`",
            "scanner",
        )
    title = f"watchlist: {verb} {' '.join(args[1:])}".rstrip()
    if len(args) < 2:
        return _wrong(title, f"type the symbols: watchlist {verb} solusdt")
    try:
        names = normalise_symbols(args[1:])
    except SymbolError as exc:
        return _wrong(title, str(exc))
    if verb == "add":
        there = [n for n in names if n in watchlist]
        if there:
            return _wrong(title, f"{', '.join(there)} already on the watchlist ({listed})")
        changed = (*watchlist, *names)
    else:
        absent = [n for n in names if n not in watchlist]
        if absent:
            return _wrong(title, f"{', '.join(absent)} not on the watchlist ({listed})")
        changed = tuple(s for s in watchlist if s not in names)
    try:
        symbol_list(changed, "watchlist")
    except SymbolError as exc:
        return _wrong(title, str(exc))
    n = len(changed)
    return Suggestion(
        f"watchlist: {verb} {' '.join(names)}",
        f"then {n} symbols, {n * (n - 1) // 2:,} pairs (recorded, ranked by key w)",
        f"set_watchlist({changed!r})",
    )


_RULE_WORDS = {  # what `backtest` takes, as typed: the rule's field
    "entry": "entry",
    "exit": "exit",
    "stop": "stop",
    "fee": "fee_bps",
    "hedge": "hedge",
    "delta": "delta",
    "ve": "ve",
}


def rule_text(p: BacktestParams) -> str:
    """The rule as `backtest` takes it: what to type to get it back."""
    text = f"entry {p.entry:g} exit {p.exit:g} stop {p.stop:g} fee {p.fee_bps:g} hedge {p.hedge}"
    return text + (f" delta {p.delta:g} ve {p.ve:g}" if p.hedge == "kalman" else "")


def _backtest(verb: str, args: list[str], trading: BacktestParams) -> Suggestion:
    """`backtest [WORD VALUE]...` sets the rule and runs it; `hedge NAME` sets the hedge
    the stats panel shows (and the backtest uses)."""
    if verb == "hedge":
        if not args:
            now = trading.hedge
            return _wrong("backtest: hedge", f"type hedge {' or '.join(HEDGES)} (now {now})")
        args = ["hedge", *args]
    if len(args) % 2:
        return _wrong(f"backtest: {' '.join(args)}", "type a word and its value: backtest entry 2")
    changes: dict[str, float | str] = {}
    for word, value in zip(args[::2], args[1::2], strict=True):
        field = _RULE_WORDS.get(word.lower())
        title = f"backtest: {word} {value}"
        if field is None:
            close = difflib.get_close_matches(word.lower(), list(_RULE_WORDS), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            return _wrong(title, f"unknown word {word!r}: use {', '.join(_RULE_WORDS)}{hint}")
        if field == "hedge":
            changes[field] = value.lower()
            continue
        try:
            changes[field] = float(value)
        except ValueError:
            return _wrong(title, f"{word} takes a number, not {value!r}")
    try:
        rule = replace(trading, **changes)  # type: ignore[arg-type]
    except ValueError as exc:
        return _wrong(f"{verb}: {' '.join(args)}".rstrip(), str(exc))
    if verb == "hedge" and changes:
        return Suggestion(
            f"backtest: hedge {rule.hedge}",
            "the stats panel shows its beta and z beside the fit over L (key b backtests it)",
            f"set_trading({changes!r})",
        )
    return Suggestion(
        f"backtest: {rule_text(rule)}",
        "backtest every stored bar of this view with this rule (key b: the last rule)",
        f"run_backtest({changes!r})",
    )


def _rule_action(verb: str, rule: AlertRule) -> Suggestion:
    where = f"{rule.target} {rule.timeframe}"
    title = f"alerts: {verb} #{rule.id} {rule.rule.text} ({where})"
    if verb == "remove":
        return Suggestion(
            title, "delete the rule (its past firings stay)", f"remove_alert({rule.id})"
        )
    muted = verb == "mute"
    what = "no toast, bell or log until unmuted" if muted else "fire again"
    return Suggestion(title, what, f"mute_alert({rule.id}, {muted})")


def _alerts(args: list[str], rules: Sequence[AlertRule]) -> Iterator[Suggestion]:
    """Every rule with what can be done to it, and mute / unmute all."""
    verb = args[0].lower() if args else ""
    if verb in ("mute", "unmute") and len(args) == 1:
        muted = verb == "mute"
        yield Suggestion(
            f"alerts: {verb} all", "every rule, every pair", f"mute_alert(None, {muted})"
        )
        return
    if not rules:
        yield _wrong("alerts: none set", "add one: alert abs(z) > 2")
        return
    for rule in rules:
        yield _rule_action("unmute" if rule.muted else "mute", rule)
        yield _rule_action("remove", rule)
    yield Suggestion("alerts: mute all", "every rule, every pair", "mute_alert(None, True)")
    yield Suggestion("alerts: unmute all", "every rule, every pair", "mute_alert(None, False)")


def _wrong(title: str, why: str) -> Suggestion:
    return Suggestion(title, why, None)


def _pair(args: list[str]) -> Suggestion:
    title = f"view: pair {' '.join(args)}".rstrip()
    if len(args) != 2:
        return _wrong(title, "type two symbols: pair solusdt bnbusdt")
    try:
        a, b = normalise_symbols(args)
    except SymbolError as exc:
        return _wrong(title, str(exc))
    return Suggestion(f"view: pair {a} {b}", f"switch to {a}/{b}", f"pair({a!r}, {b!r})")


def _count(verb: str, args: list[str]) -> Suggestion:
    title = f"view: {verb} {' '.join(args)}".rstrip()
    if len(args) != 1 or not args[0].isdigit():
        return _wrong(title, f"type a whole number of bars: {verb} 60")
    n = int(args[0])
    return Suggestion(f"view: {verb} {n}", f"{verb} of {n} bars", f"set_{verb}({n})")


def _refresh(args: list[str]) -> Suggestion:
    title = f"display: refresh every {args[0]} s"
    try:
        seconds = float(args[0].removesuffix("s"))
    except ValueError:
        return _wrong(title, "type seconds: refresh 2")
    low, high = REFRESH_RANGE
    if not low <= seconds <= high:
        return _wrong(title, f"refresh must be between {low:g} and {high:g} seconds")
    return Suggestion(
        f"display: refresh every {seconds:g} s", "redraw interval", f"refresh_every({seconds})"
    )


def _theme(args: list[str], themes: Collection[str]) -> Iterator[Suggestion]:
    name = args[0].lower()
    matches = sorted(t for t in themes if t.startswith(name))
    if not matches:
        yield _wrong(
            f"display: theme {name}", f"no theme {name!r}: try {', '.join(sorted(themes)[:4])}"
        )
    for theme in matches:
        yield Suggestion(f"display: theme {theme}", "colours of the whole app", f"theme({theme!r})")


def _export(args: list[str]) -> Suggestion:
    what = args[0].lower()
    if what not in ("bars", "analytics") or len(args) != 2:
        return _wrong(f"export: {' '.join(args)}", "type export bars PATH or export analytics PATH")
    try:
        path, into_dir = export_target(args[1])
    except ValueError as exc:
        return _wrong(f"export: {what} CSV to {args[1]}", str(exc))
    if into_dir:
        return Suggestion(
            f"export: {what} CSV into {path}",
            "a new file named after the view",
            f"export_to({what!r}, {args[1]!r})",
        )
    return Suggestion(
        f"export: {what} CSV to {path}",
        "with its .meta.json sidecar",
        f"export_to({what!r}, {args[1]!r})",
    )


def literal(text: str) -> str:
    """Text for the palette, which reads markup: every `[` shown as itself (Textual's
    own escape leaves an unfinished tag such as `[/` alone, and that still breaks)."""
    return text.replace("[", "\\[")


class PairCommands(Provider):
    """Everything the keys do, plus the commands that take an argument."""

    @property
    def cockpit(self) -> PairsApp:
        return cast("PairsApp", self.app)

    async def discover(self) -> Hits:
        for s in FIXED:
            yield DiscoveryHit(s.title, partial(self._run, s), help=s.help)
        for _, title, how in TYPED:
            yield DiscoveryHit(title, partial(self.app.notify, how, title=title), help=how)

    async def search(self, query: str) -> Hits:
        app = self.cockpit
        session = app.session
        typed = list(
            interpret(
                query, app.available_themes, session.rules(), session.watchlist, session.trading
            )
        )
        for s in typed:  # what was typed is text, never markup (`alert [/]` must not crash)
            yield Hit(1.0, literal(s.title), partial(self._run, s), s.title, literal(s.help))
        if typed:
            return
        matcher = self.matcher(query)
        for s in FIXED:
            score = matcher.match(s.title)
            if score > 0:
                yield Hit(score, matcher.highlight(s.title), partial(self._run, s), s.title, s.help)
        for _, title, how in TYPED:
            score = matcher.match(title)
            if score > 0:
                hint = partial(self.app.notify, how, title=title)
                yield Hit(score, matcher.highlight(title), hint, title, how)

    async def _run(self, suggestion: Suggestion) -> None:
        if suggestion.action is None:
            self.app.notify(
                suggestion.help, title=suggestion.title, severity="warning", markup=False
            )
        else:
            await self.app.run_action(suggestion.action)
