"""Command line: `gateway serve` (the default), `gateway check` (validate the settings),
`gateway provider` (the local provider alone) and `gateway call`/`gateway calls` (the call API
of a running gateway)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from gateway import __version__, banner
from gateway.cli_calls import add_call_commands, run_client_command
from gateway.config import (
    Settings,
    add_arguments,
    command_line_secrets,
    effective_settings,
    load_settings,
)
from gateway.errors import ConfigError, StartupError
from gateway.logs import configure, get_logger


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__)
    parser.add_argument("--version", action="version", version=f"gateway {__version__}")
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="answer SIP and WebRTC calls (default)")
    add_arguments(serve)
    check = sub.add_parser(
        "check", help="validate the settings without starting; print them, secrets redacted"
    )
    add_arguments(check)
    provider = sub.add_parser("provider", help="run the local Realtime provider standalone")
    provider.add_argument("--listen", default="127.0.0.1:8765", help="HOST:PORT")
    provider.add_argument("--flavor", default="openai", choices=["openai", "yandex"])
    provider.add_argument("--log-format", default="auto", choices=["auto", "json", "console"])
    provider.add_argument("--log-level", default="info")
    add_call_commands(sub)  # issue 19: `gateway call`, `gateway calls [show ID]`
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `gateway` console script; returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or (
        args_list[0].startswith("-") and args_list[0] not in ("-h", "--help", "--version")
    ):
        args_list.insert(0, "serve")
    args = _parser().parse_args(args_list)
    if args.command == "provider":
        return _run_provider(args)
    if args.command in ("call", "calls"):
        return run_client_command(args)
    if args.command == "check":
        return _check(args)
    settings, problems = _settings_and_problems(args)
    if problems:  # the same checks as `gateway check`, every problem at once
        for problem in problems:
            print(f"gateway: error: {problem}", file=sys.stderr)
        return 2
    configure(settings.log_format, settings.log_level)
    warn_command_line_secrets(command_line_secrets(args))
    from gateway.app import Gateway

    gateway = Gateway(settings)
    gateway.human = banner.is_human(settings.log_format)
    try:
        _run(gateway.run())
    except StartupError as exc:
        print(f"gateway: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # a second signal that came as the loop closed, after a clean stop, changes nothing
        return 0 if gateway.stopped else 130
    finally:
        _ignore_late_signals()
    return 0


def _settings_and_problems(args: argparse.Namespace) -> tuple[Settings, list[str]]:
    """The settings and every problem in them, one line each: the checks `gateway check` runs
    and `gateway serve` runs before starting."""
    from gateway.call.routing import validate_routes

    problems: list[str] = []
    try:
        settings = load_settings(args, problems=problems)
    except ConfigError as exc:  # the config file itself cannot be read or parsed
        return Settings(), [str(exc)]
    try:
        validate_routes(settings.routes)
    except ConfigError as exc:
        problems.append(str(exc))
    return settings, problems


def _check(args: argparse.Namespace) -> int:
    """`gateway check`: every problem on its own line (exit 2), else the effective settings with
    every secret redacted (exit 0). Nothing is started."""
    settings, problems = _settings_and_problems(args)
    if problems:
        for problem in problems:
            print(f"gateway: error: {problem}", file=sys.stderr)
        print(f"gateway check: {len(problems)} problem(s)", file=sys.stderr)
        return 2
    for line in effective_settings(settings):
        print(line)
    provider, why = settings.provider_choice()
    print(f"# provider: {provider} ({why})")
    print("gateway check: OK", file=sys.stderr)
    return 0


def warn_command_line_secrets(names: Sequence[str]) -> None:
    """One warning line per secret given as a flag, naming the setting, never the value."""
    log = get_logger("config")
    for name in names:
        log.warning(
            "secret_on_command_line",
            setting=name,
            flag="--" + name.replace("_", "-"),
            advice=(
                "every local user can read the command line (/proc/PID/cmdline, ps): give it "
                f"as GATEWAY_{name.upper()}, in a file (--{name.replace('_', '-')}-file or "
                f"GATEWAY_{name.upper()}_FILE) or in the config file"
            ),
        )


def _ignore_late_signals() -> None:
    """Once the gateway has stopped, the process only exits: a late SIGINT or SIGTERM (the
    second of two sent back to back) must not turn a clean exit into death by signal."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError, OSError):
            signal.signal(sig, signal.SIG_IGN)


def _run(main: Coroutine[Any, Any, None]) -> None:
    """`asyncio.run` on uvloop when it is installed (Linux), else on the default loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def _run_provider(args: argparse.Namespace) -> int:
    configure(args.log_format, args.log_level)
    try:
        from gateway.realtime.local.server import run_standalone
    except ImportError as exc:  # pragma: no cover - until the local provider lands
        print(f"gateway: error: local provider unavailable: {exc}", file=sys.stderr)
        return 1
    try:
        _run(run_standalone(args.listen, flavor=args.flavor))
    except OSError as exc:
        print(
            f"gateway: error: provider listen {args.listen}: {exc.strerror or exc}", file=sys.stderr
        )
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
