"""`gateway call TARGET`, `gateway calls` and `gateway calls show ID`: the call API of a running
gateway from the command line (aiohttp client).

The API token comes from `GATEWAY_API_TOKEN`, or a file (`--api-token-file` or
`GATEWAY_API_TOKEN_FILE`), never from a flag: the command line is readable by every local user.

`gateway call` prints one line per progress event of `GET /calls/{id}/events` and exits with
how the call ended (the `EXIT_*` statuses below; docs/api.md, "The command line").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from gateway.errors import ApiClientError

#: exit statuses of `gateway call`
EXIT_OK = 0  # answered, then ended normally
EXIT_ERROR = 1  # the API refused the call or could not be reached
EXIT_USAGE = 2  # bad arguments (argparse)
EXIT_BUSY = 3  # 486 Busy Here, 600 Busy Everywhere
EXIT_REJECTED = 4  # any other final 4xx-6xx (403, 603 Decline, 404 ...)
EXIT_NO_ANSWER = 5  # no answer: timeout, 408, 480, 487
EXIT_FAILED = 6  # failed: answered but the call ended with an error, or set-up failed
EXIT_INTERRUPTED = 130  # Ctrl-C: the call was hung up
FAILURE_EXITS = {"busy": EXIT_BUSY, "rejected": EXIT_REJECTED, "no_answer": EXIT_NO_ANSWER}

DEFAULT_URL = "http://127.0.0.1:8080"


def add_client_arguments(parser: argparse.ArgumentParser, *, nested: bool = False) -> None:
    """`--url` and `--api-token-file` (the token itself: `GATEWAY_API_TOKEN` only). `nested`:
    a sub-subcommand's copies, which must not reset what its parent command was given."""
    parser.add_argument(
        "--url",
        default=argparse.SUPPRESS if nested else os.environ.get("GATEWAY_URL", DEFAULT_URL),
        help=f"the gateway's HTTP address (GATEWAY_URL; default {DEFAULT_URL})",
    )
    parser.add_argument(
        "--api-token-file",
        default=argparse.SUPPRESS if nested else os.environ.get("GATEWAY_API_TOKEN_FILE", ""),
        help="read the API token from this file (or GATEWAY_API_TOKEN_FILE / GATEWAY_API_TOKEN)",
    )


def add_call_commands(sub: Any) -> None:
    """The `call` and `calls` subcommands."""
    call = sub.add_parser("call", help="place an outbound call through a running gateway")
    call.add_argument("target", help="a number (through a trunk) or a sip: URI")
    call.add_argument("--trunk", help="the trunk to call through (default: the first outbound)")
    call.add_argument("--from", dest="from_user", help="the caller's user (From), e.g. +15551234")
    call.add_argument("--instructions", help="the agent's instructions for this call")
    call.add_argument(
        "--session",
        metavar="FILE",
        help="a JSON file with an OpenAI session config for this call (--instructions wins)",
    )
    add_client_arguments(call)
    calls = sub.add_parser("calls", help="list the live calls of a running gateway")
    add_client_arguments(calls)
    calls.add_argument("--json", action="store_true", help="print the API's JSON")
    show_sub = calls.add_subparsers(dest="calls_command")
    show = show_sub.add_parser("show", help="show one call")
    show.add_argument("call_id")
    add_client_arguments(show, nested=True)
    show.add_argument("--json", action="store_true", default=argparse.SUPPRESS)


def api_token(args: argparse.Namespace) -> str:
    """The token: GATEWAY_API_TOKEN, else the file named by --api-token-file; "" for none."""
    token = os.environ.get("GATEWAY_API_TOKEN", "")
    if not token and args.api_token_file:
        try:
            token = Path(args.api_token_file).read_text().strip()
        except OSError as exc:
            raise ApiClientError(f"--api-token-file: {exc.strerror or exc}") from None
    return token


class ApiClient:
    """A session with the gateway's call API."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = aiohttp.ClientSession(headers=headers)

    async def close(self) -> None:
        await self.http.close()

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        try:
            async with self.http.request(method, self.url + path, json=body) as resp:
                data = await resp.json(content_type=None)
                if resp.status >= 400:
                    message = data.get("error", {}).get("message", "") if data else ""
                    raise ApiClientError(f"{method} {path}: {resp.status} {message}".rstrip())
                return data
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise ApiClientError(f"{method} {self.url}{path}: {exc}") from None

    async def events(self, call_id: str) -> AsyncIterator[dict[str, Any]]:
        """The call's server-sent progress events (`GET /calls/{id}/events`), until it ends."""
        path = f"/calls/{call_id}/events"
        timeout = aiohttp.ClientTimeout(total=None, sock_read=60)
        try:
            async with self.http.get(self.url + path, timeout=timeout) as resp:
                if resp.status >= 400:
                    raise ApiClientError(f"GET {path}: {resp.status}")
                async for raw in resp.content:
                    line = raw.decode().rstrip("\r\n")
                    if line.startswith("data:"):
                        yield json.loads(line[5:])
        except (aiohttp.ClientError, OSError) as exc:
            raise ApiClientError(f"GET {self.url}{path}: {exc}") from None


def describe_event(event: dict[str, Any]) -> str:
    """One progress line for a person."""
    kind = event["event"]
    if kind == "dialing":
        via = f" via trunk {event['trunk']}" if event.get("trunk") else " (direct)"
        return f"dialing {event.get('to', '')}{via}"
    if kind == "ringing":
        return f"ringing ({event.get('status', '')})"
    if kind == "tool_call":
        return f"tool call: {event.get('name')} -> {event.get('outcome')} ({event.get('ms')} ms)"
    if kind == "failed":
        status = f" {event['status']}" if event.get("status") else ""
        reason = f" {event['reason']}" if event.get("reason") else ""
        return f"not answered: {event.get('outcome')}{status}{reason}"
    if kind == "ended":
        return f"hung up: {event.get('outcome')}"
    return str(kind)


def exit_status(last: dict[str, Any] | None) -> int:
    """How the call ended, as `gateway call`'s exit status."""
    if last is None:
        return EXIT_FAILED
    if last["event"] == "failed":
        return FAILURE_EXITS.get(str(last.get("outcome")), EXIT_FAILED)
    if last["event"] == "ended":
        return EXIT_FAILED if last.get("outcome") == "error" else EXIT_OK
    return EXIT_FAILED


def read_session(path: str) -> dict[str, Any]:
    """The `--session` file: a JSON object (an OpenAI session config)."""
    try:
        session = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ApiClientError(f"--session: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ApiClientError(f"--session: not JSON: {exc}") from None
    if not isinstance(session, dict):
        raise ApiClientError("--session: the file must hold a JSON object")
    return session


async def place_call(args: argparse.Namespace) -> int:
    client = ApiClient(args.url, api_token(args))
    try:
        body: dict[str, Any] = {"to": args.target}
        if args.trunk:
            body["trunk"] = args.trunk
        if args.from_user:
            body["from"] = args.from_user
        session = read_session(args.session) if args.session else {}
        if args.instructions:
            session["instructions"] = args.instructions
        if session:
            body["session"] = session
        created = await client.request("POST", "/calls", body)
        call_id = str(created["id"])
        print(f"call {call_id}", flush=True)
        interrupted = asyncio.Event()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signal.SIGINT, interrupted.set)
        last: dict[str, Any] | None = None

        async def follow() -> None:
            nonlocal last
            async for event in client.events(call_id):
                last = event
                print(describe_event(event), flush=True)

        follower = asyncio.ensure_future(follow())
        stopper = asyncio.ensure_future(interrupted.wait())
        await asyncio.wait({follower, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if interrupted.is_set() and not follower.done():
            follower.cancel()
            with contextlib.suppress(ApiClientError):
                await client.request("DELETE", f"/calls/{call_id}")
            print("interrupted: hung up", flush=True)
            return EXIT_INTERRUPTED
        follower.result()  # an ApiClientError of the stream
        return exit_status(last)
    finally:
        await client.close()


def _table(calls: list[dict[str, Any]]) -> str:
    columns = ("id", "leg", "direction", "state", "caller", "called", "provider", "duration_s")
    rows = [[str(c.get(col, "")) for col in columns] for c in calls]
    widths = [max([len(col), *(len(r[i]) for r in rows)]) for i, col in enumerate(columns)]
    lines = ["  ".join(col.upper().ljust(w) for col, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


async def list_calls(args: argparse.Namespace) -> int:
    client = ApiClient(args.url, api_token(args))
    try:
        if args.calls_command == "show":
            call = await client.request("GET", f"/calls/{args.call_id}")
            if args.json:
                print(json.dumps(call, indent=2))
            else:
                print("\n".join(f"{key}: {value}" for key, value in call.items()))
            return EXIT_OK
        data = await client.request("GET", "/calls")
        if args.json:
            print(json.dumps(data, indent=2))
        elif data["calls"]:
            print(_table(data["calls"]))
        else:
            print("no live calls")
        return EXIT_OK
    finally:
        await client.close()


def run_client_command(args: argparse.Namespace) -> int:
    """Run `call` or `calls`; an API error is one line on stderr and status 1."""
    command = place_call if args.command == "call" else list_calls
    try:
        return asyncio.run(command(args))
    except ApiClientError as exc:
        print(f"gateway: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
