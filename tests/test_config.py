"""Settings layering and strict validation."""

from __future__ import annotations

import tomllib
from dataclasses import asdict

import pytest
from conftest import REPO

from pairs_tui.alerts import WATCHLIST
from pairs_tui.config import Config, ConfigError, apply, load_config, user_config_path

pytestmark = pytest.mark.unit


def test_documented_config_toml_equals_the_built_in_defaults():
    text = (REPO / "config.toml").read_text()
    documented = tomllib.loads(text)
    defaults = asdict(Config())
    assert defaults.pop("alerts") == ()  # no rules by default: the examples are comments
    assert documented.pop("watchlist") == {"symbols": []}  # TOML has lists, not tuples
    assert defaults.pop("watchlist") == {"symbols": ()}
    assert documented == defaults
    assert apply(Config(), tomllib.loads(text), "config.toml") == Config()
    # and the commented [[alerts]] examples are valid as written
    commented = text[text.index("# [[alerts]]") :].splitlines()
    example = "\n".join(line.removeprefix("#").strip() for line in commented)
    rules = apply(Config(), tomllib.loads(example), "config.toml")
    assert [a.rule for a in rules.alerts] == [
        "abs(z) > 2 cooldown 5m",
        "corr < 0.6",
        "abs(z) > 2 and adf_p < 0.05",
    ]
    assert rules.alerts[2].pair == WATCHLIST


def test_layers_apply_in_order(tmp_path):
    user = user_config_path()
    user.parent.mkdir(parents=True, exist_ok=True)
    user.write_text('[feed]\nstale_after = 10\nstream = "aggTrade"\n[demo]\nrate = 5\n')
    explicit = tmp_path / "mine.toml"
    explicit.write_text("[feed]\nstale_after = 12.5\n")
    config = load_config(explicit)
    assert config.feed.stale_after == 12.5  # --config beats the user file
    assert config.feed.stream == "aggTrade"  # the user file beats the defaults
    assert config.demo.rate == 5.0 and isinstance(config.demo.rate, float)
    flags = apply(config, {"feed": {"stream": "trade"}}, "command line")
    assert flags.feed.stream == "trade" and flags.feed.stale_after == 12.5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[feed]\nstale = 3\n", "unknown key 'feed.stale'; did you mean 'feed.stale_after'?"),
        ("[feeds]\n", "unknown section [feeds]; did you mean [feed]?"),
        ('[feed]\nstale_after = "x"\n', "'feed.stale_after' must be a number, not str 'x'"),
        ("[store]\nmax_pending = 2.5\n", "'store.max_pending' must be an integer"),
        ("[feed]\nstale_after = true\n", "'feed.stale_after' must be a number, not bool"),
        ('[feed]\nstream = "depth"\n', "'feed.stream' must be 'trade' or 'aggTrade'"),
        ('[feed]\nws_url = "http://x"\n', "'feed.ws_url' must start with ws:// or wss://"),
        ("[feed]\nbackoff_max = 0\n", "'feed.backoff_max' must be greater than 0"),
        ('feed = "x"\n', "'feed' must be a table"),
        ("[feed]\nstale_after = \n", "invalid TOML: Invalid value (at line 2, column 15)"),
        ('[watchlist]\nsymbols = "btcusdt"\n', "'watchlist.symbols' must be a list of strings"),
        ("[watchlist]\nsymbols = [1, 2]\n", "'watchlist.symbols' must be a list of strings"),
        (
            '[watchlist]\nsymbols = ["btcusdt", "btc-usdt"]\n',
            "'watchlist.symbols' is not a watchlist: invalid symbol btc-usdt",
        ),
        ("[backtest]\nentry = 0.5\nexit = 1\n", "[backtest]: entry must be above exit"),
        ('[backtest]\nhedge = "ridge"\n', "[backtest]: hedge must be one of rolling, static"),
        ("[backtest]\nfee_bps = -1\n", "[backtest]: fee_bps must not be negative"),
        ("[backtest]\nstop = 1\n", "[backtest]: stop must be 0 (no stop) or above entry"),
        (
            '[[alerts]]\nrule = "z > 2"\npair = "everything"\n',
            'alerts #1: pair must be two symbols, like ["btcusdt", "ethusdt"], or "watchlist"',
        ),
    ],
)
def test_bad_files_name_the_key_and_the_file(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(str(path))
    assert message in str(info.value)


def test_missing_explicit_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[feed]\nbackoff_max = nan\n", "'feed.backoff_max' must be a finite number"),
        ("[demo]\nrate = inf\n", "'demo.rate' must be a finite number"),
        ("[demo]\nrate = 1e9\n", "at most 100000"),
    ],
)
def test_non_finite_and_absurd_numbers_are_refused(tmp_path, text, message):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_a_binary_config_file_names_the_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_bytes(b"\xff\xfe\x00[feed]")
    with pytest.raises(ConfigError, match="not a text file"):
        load_config(path)
