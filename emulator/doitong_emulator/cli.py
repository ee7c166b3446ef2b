"""The ``doitong-emulator`` command."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from airflow_provider_doitong.client.contract import PLANS
from doitong_emulator.accounts import (
    DEFAULT_API_KEY,
    DEFAULT_CREDITS,
    DEFAULT_PLAN,
    DEFAULT_WEBHOOK_SECRET,
)
from doitong_emulator.faults import FaultConfig
from doitong_emulator.hostile_values import CREDIT_COST_FORMS, TIME_HEADER_FORMS
from doitong_emulator.images import FORMATS
from doitong_emulator.outputs import BODIES
from doitong_emulator.server import DoitongEmulator

log = logging.getLogger("doitong_emulator")


class _HelpWithDefaults(argparse.HelpFormatter):
    """``--help`` shows each option's default, where it has one (not for flags and unset options)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        unset = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if action.option_strings and not unset:
            text += " (default: %(default)s)"
        return text


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    parser = argparse.ArgumentParser(
        prog="doitong-emulator",
        description=(
            "Serve a local emulation of the Doitong image API. Its images are placeholders: a "
            "gradient and random shapes drawn from the job, not generated from the prompt."
        ),
        formatter_class=_HelpWithDefaults,
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    parser.add_argument("--port", type=int, default=8765, help="port to listen on; 0 picks a free one")
    parser.add_argument("--public-url", help="base URL put in job urls, if not http://HOST:PORT")
    _add_account_options(parser)
    _add_fault_options(parser)
    _add_hostile_options(parser)
    parser.add_argument("--state-file", help="load state from this file at start, save it on shutdown")
    parser.add_argument("--log-level", default="INFO", help="logging level")
    return parser


def _add_account_options(parser: argparse.ArgumentParser) -> None:
    """The account's options, its timing and its plan's limits (each a group in ``--help``)."""
    account = parser.add_argument_group("account")
    account.add_argument("--api-key", default=DEFAULT_API_KEY, help="the API key clients must send")
    account.add_argument("--plan", default=DEFAULT_PLAN, choices=sorted(PLANS), help="the account's plan")
    account.add_argument("--credits", type=int, default=DEFAULT_CREDITS, help="starting credit balance")
    account.add_argument("--webhook-secret", default=DEFAULT_WEBHOOK_SECRET, help="signs webhook deliveries")
    timing = parser.add_argument_group("timing")
    timing.add_argument("--time-scale", type=float, default=1.0, help="multiplies every emulated duration")
    timing.add_argument("--job-seconds", type=float, default=20.0, help="emulated processing time per job")
    timing.add_argument("--job-seconds-spread", type=float, default=0.0, help="± spread of processing time")
    timing.add_argument("--queue-seconds", type=float, default=0.0, help="emulated time jobs stay queued")
    timing.add_argument("--seed", type=int, help="seed for job durations and faults")
    limits = parser.add_argument_group("limit overrides (default: the plan's; -1 = unlimited)")
    limits.add_argument("--requests-per-minute", type=int, help="requests a minute")
    limits.add_argument("--concurrent-jobs", type=int, help="jobs running at once")
    limits.add_argument("--daily-limit", type=int, help="submissions a day")


def _add_fault_options(parser: argparse.ArgumentParser) -> None:
    """The faults injected: errors, drops, latency, an outage, stale resets, a key rotation, failed or stuck jobs."""
    faults = parser.add_argument_group("faults")
    faults.add_argument(
        "--error-500-rate", type=float, default=0.0, help="share of API requests answered 500"
    )
    faults.add_argument("--error-429-rate", type=float, default=0.0, help="share answered 429 RATE_LIMITED")
    faults.add_argument("--drop-rate", type=float, default=0.0, help="share whose connection is dropped")
    faults.add_argument("--latency", type=float, default=0.0, help="seconds added to every API request")
    faults.add_argument("--outage", type=float, default=0.0, help="seconds every API request fails (0: none)")
    faults.add_argument("--outage-after", type=float, default=0.0, help="seconds from start to the outage")
    faults.add_argument("--outage-drop-rate", type=float, default=0.0, help="share dropped, not 503, in it")
    faults.add_argument("--stale-reset", type=float, default=0.0, help="429 resets this many seconds past")
    faults.add_argument("--rotate-key", help="a new key for the account; the old one stops working...")
    faults.add_argument("--old-key-valid-for", type=float, default=0.0, help="...this many seconds later")
    faults.add_argument("--fail-job-rate", type=float, default=0.0, help="share of jobs that fail")
    faults.add_argument("--stuck-job-rate", type=float, default=0.0, help="share of jobs that never finish")


def _add_hostile_options(parser: argparse.ArgumentParser) -> None:
    """The hostile answers (job ids, output URLs, downloads) and hostile values (headers, fields, sizes)."""
    hostile = parser.add_argument_group("hostile answers (each off by default)")
    hostile.add_argument("--hostile-job-ids", action="store_true", help="job ids like ../../escape_<hex>")
    hostile.add_argument("--output-base-url", help="output URLs on this base URL (another host)")
    hostile.add_argument("--output-suffix", help="output URLs end with this instead of .jpg (e.g. .py)")
    hostile.add_argument(
        "--output-format", default="jpeg", choices=sorted(FORMATS), help="image format served"
    )
    hostile.add_argument("--download-body", default="image", choices=BODIES, help="what downloads answer")
    hostile.add_argument(
        "--download-faults", type=int, default=0, help="only the first N downloads get --download-body"
    )
    hostile.add_argument("--download-redirects", type=int, default=0, help="redirects before each download")
    hostile.add_argument("--redirect-base-url", help="where download redirects point (default: itself)")
    values = parser.add_argument_group("hostile values (each off by default)")
    values.add_argument(
        "--time-headers", default="plain", choices=TIME_HEADER_FORMS, help="reset/Retry-After form"
    )
    values.add_argument("--credit-cost-as", default="int", choices=CREDIT_COST_FORMS, help="creditCost form")
    values.add_argument("--huge-answer-mib", type=int, default=0, help="status answers of this many MiB")
    values.add_argument("--two-way-output-host", help="output URLs whose host parses two ways")
    values.add_argument("--hold-slot", type=float, default=0.0, help="another client holds a slot this long")


def _ignore(signum: int, frame: FrameType | None) -> None:
    log.debug("Signal %d received after shutdown", signum)


def _fault_config(args: argparse.Namespace) -> FaultConfig:
    """The faults, hostile answers and hostile values the command line asks for."""
    return FaultConfig(
        error_500_rate=args.error_500_rate,
        error_429_rate=args.error_429_rate,
        drop_rate=args.drop_rate,
        latency_s=args.latency,
        outage_s=args.outage,
        outage_after_s=args.outage_after,
        outage_drop_rate=args.outage_drop_rate,
        stale_reset_s=args.stale_reset,
        fail_job_rate=args.fail_job_rate,
        stuck_job_rate=args.stuck_job_rate,
        seed=args.seed,
        hostile_job_ids=args.hostile_job_ids,
        output_base_url=args.output_base_url,
        output_suffix=args.output_suffix,
        output_format=args.output_format,
        download_body=args.download_body,
        download_faults=args.download_faults,
        download_redirects=args.download_redirects,
        redirect_base_url=args.redirect_base_url,
        time_headers=args.time_headers,
        credit_cost_as=args.credit_cost_as,
        huge_answer_mib=args.huge_answer_mib,
        two_way_output_host=args.two_way_output_host,
        hold_slot_s=args.hold_slot,
    )


def _emulator(args: argparse.Namespace) -> DoitongEmulator:
    """The emulator the command line describes (``ValueError`` or ``OSError`` if it cannot be made)."""
    faults = _fault_config(args)
    emulator = DoitongEmulator(
        host=args.host,
        port=args.port,
        plan=args.plan,
        api_key=args.api_key,
        credits=args.credits,
        webhook_secret=args.webhook_secret,
        time_scale=args.time_scale,
        job_seconds=args.job_seconds,
        job_seconds_spread=args.job_seconds_spread,
        queue_seconds=args.queue_seconds,
        seed=args.seed,
        faults=faults,
        requests_per_minute=args.requests_per_minute,
        concurrent_jobs=args.concurrent_jobs,
        daily_limit=args.daily_limit,
        public_url=args.public_url,
        state_file=args.state_file,
    )
    if args.rotate_key:
        emulator.rotate_key(args.rotate_key, old_key_valid_for=args.old_key_valid_for)
    return emulator


def main(argv: Sequence[str] | None = None) -> int:
    """Run the emulator in the foreground until SIGINT or SIGTERM.

    :param argv: command-line arguments (``sys.argv[1:]`` by default).
    :return: the exit status.
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        emulator = _emulator(args)
    except (ValueError, OSError) as error:
        print(f"doitong-emulator: {error}", file=sys.stderr)
        return 2

    def ready(base_url: str) -> None:
        line = f"Doitong emulator listening on {base_url} (plan {args.plan})"
        print(line, flush=True)
        log.info("%s", line)

    # uvicorn re-raises the signal that stopped it once it has shut down; these handlers make
    # that a clean exit after the state was saved.
    signal.signal(signal.SIGTERM, _ignore)
    signal.signal(signal.SIGINT, _ignore)
    try:
        emulator.serve_forever(on_ready=ready)
    except OSError as error:
        print(f"doitong-emulator: {error}", file=sys.stderr)
        return 1
    log.info("Doitong emulator stopped")
    return 0
