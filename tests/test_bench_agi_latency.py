"""bench/agi_latency.py stays runnable: its machinery once, tiny, with no timing asserted.

The benchmark's figures live in docs/BENCHMARKS.md; this only checks that both servers still
do the exact exchange the stand-in Asterisk expects, that every command and call is counted,
and that a server doing anything else makes the run fail instead of measuring it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from acd.agi import AgiServer, AgiSession


def _bench() -> ModuleType:
    # bench/ is not a package, so load the file itself; dataclasses need it in sys.modules.
    name = "_bench_agi_latency"
    if name in sys.modules:
        return sys.modules[name]
    path = Path(__file__).resolve().parents[1] / "bench" / "agi_latency.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


async def test_both_servers_run_the_whole_step_at_each_level() -> None:
    bench = _bench()
    results = await bench.run([1, 4], calls=13, warmup=2, rounds=3)
    assert [level.concurrency for level in results] == [1, 4]
    for level in results:
        for kind in ("baseline", "firstline"):
            samples = level.by_server[kind]
            assert samples.calls == 13
            assert len(samples.steps) == 13
            assert len(samples.round_trips) == 13 * bench.COMMANDS_PER_CALL
            assert min(samples.round_trips) > 0
    table = bench.table(results)
    assert table.count("ratio Firstline / bare") == 2
    assert table.count("Firstline `AgiServer`") == 2


def test_main_quick_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    bench = _bench()
    argv = ["--quick", "--concurrency", "2", "--calls", "6", "--warmup", "1", "--rounds", "2"]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    assert "machine: " in out
    assert "| 2 | bare asyncio | 6 |" in out
    assert "| 2 | Firstline `AgiServer` | 6 |" in out


async def test_a_server_that_strays_from_the_step_fails_the_run() -> None:
    bench = _bench()

    async def skips_the_prompt(session: AgiSession) -> None:
        await session.get_variable("CALLERID(num)")
        await session.get_data("firstline/menu", 3000, 1)

    server = AgiServer(port=0, handlers={bench.SCRIPT: skips_the_prompt})
    await server.start()
    try:
        with pytest.raises(bench.BenchError, match="command 2"):
            await bench.run_calls(server.port, 1, 1, 0)
    finally:
        await server.close()
