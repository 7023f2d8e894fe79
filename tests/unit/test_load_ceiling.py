"""`python -m load.ceiling`: the no-engine gRPC server really answers calls from its client
processes, and the report derives its figures from what was counted."""

from __future__ import annotations

import json

import pytest

from load.ceiling import CALLS_PER_W1, main, measure


def test_two_servers_on_one_port_answer_two_clients() -> None:
    result = measure(servers=2, clients=2, concurrency=4, seconds=0.5)
    assert result.calls > 0
    assert result.server_cpu_s > 0
    assert result.client_cpu_s > 0
    report = result.report()
    assert report["calls_per_s"] == round(result.calls / 0.5)
    assert report["w1_workflows_per_s_bound"] == round(result.calls / 0.5 / CALLS_PER_W1)


def test_the_command_prints_one_json_report(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seconds", "0.3", "--concurrency", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["servers"] == 1
    assert report["calls"] > 0


@pytest.mark.parametrize("flag", ["--seconds", "--servers", "--clients", "--concurrency"])
def test_non_positive_settings_are_refused(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([flag, "0"])
    assert exit_info.value.code == 2
    assert f"{flag} must be positive" in capsys.readouterr().err
