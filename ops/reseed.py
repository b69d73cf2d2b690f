"""scripts/reseed: discard one web server's database and make it a replica again, seeded from the primary.

    scripts/reseed --lab HOST [--dry-run]
    scripts/reseed --stack NAME [--region R] HOST [--dry-run]

For a server the failover controller leaves out because it holds writes no one else has (an old primary
that committed a write no replica received: acknowledged to no client, see the README), or a replica that
cannot catch up (its primary's binary logs purged). The automatic failover is held meanwhile (its
controllers stop on every load balancer and start again at the end), so that nothing points the server
elsewhere while it is seeded. On the server: replication stopped, its app database dropped (not written
to its binary log), then webinfra-db-setup --replica, as at a replica's first boot: a consistent copy of
the primary's data (mariadb-dump), replication from the copy's position. Refused for the primary itself,
and when there is no writable primary to copy.
"""

from __future__ import annotations

import sys
from typing import Any

from ops.promote import (
    LabRunner,
    Promotion,
    Server,
    SsmRunner,
    hold_failover,
    release_failover,
    sql,
    stack_command_parser,
)
from provisioning.render import DB_NAME

RESEED_TIMEOUT = 3600


class ReseedRefused(RuntimeError):
    pass


NOT_READ_ONLY = 3  # the server was writable when its turn came: nothing dropped


def reseed_command() -> str:
    """What a server runs to be re-seeded (scripts/restore runs it on every replica too): never on a
    writable server, whatever the caller believed."""
    return (
        f'[ "$({sql("SELECT @@global.read_only")})" = 1 ] || {{ echo "writable: not re-seeded" >&2; '
        f"exit {NOT_READ_ONLY}; }} && "
        + sql(f"STOP SLAVE; SET SESSION sql_log_bin = 0; DROP DATABASE IF EXISTS {DB_NAME}")
        + " && rm -f /var/lib/webinfra/db-initialised && /usr/local/sbin/webinfra-db-setup --replica"
    )


def reseed(runner: Any, name: str, *, dry_run: bool = False, say=print) -> None:
    servers: list[Server] = runner.servers()
    promotion = Promotion(runner, servers, say)
    promotion.survey()
    target = next((s for s in servers if s.name == name), None)
    if target is None:
        raise ReseedRefused(f"{name} is not one of the stack's web servers ({', '.join(s.name for s in servers)})")
    if not target.reachable:
        raise ReseedRefused(f"{name} does not answer")
    primaries = [s for s in servers if s.role == "primary"]
    if target in primaries:
        raise ReseedRefused(f"{name} is the primary: promote another server first (scripts/promote)")
    if not primaries:
        raise ReseedRefused("no writable primary to copy from")
    say(f"{name}: its database is dropped and seeded from {primaries[0].name} ({primaries[0].gtid})")
    if dry_run:
        say("dry run: nothing changed")
        return
    held = hold_failover(runner, say, "re-seeding")
    missing = sorted(set(runner.balancers()) - set(held))
    if missing:
        release_failover(runner, held, say)
        raise ReseedRefused(f"the failover controller could not be held on {', '.join(missing)}")
    promotion.survey()  # again, now that nothing changes the roles
    if target.role != "replica" or not any(s.role == "primary" for s in servers):
        release_failover(runner, held, say)
        raise ReseedRefused(f"the roles changed while the failover was being held ({name}: {target.role})")
    status, output = runner.run(name, reseed_command(), RESEED_TIMEOUT)
    say(output.strip())
    if status == 255:  # no answer: the server may still be seeding; nothing may point it elsewhere
        raise RuntimeError(
            f"{name}: no answer ({output.strip()[-200:]}); the failover stays held: when the server is a replica "
            "again, `systemctl start webinfra-failover` on the load balancers"
        )
    release_failover(runner, held, say)
    if status != 0:
        raise RuntimeError(f"{name}: re-seeding failed ({status})")


def main(argv: list[str]) -> int:
    parser = stack_command_parser("scripts/reseed", __doc__)
    parser.add_argument("host", help="the web server to re-seed, e.g. web-01")
    parser.add_argument("--dry-run", action="store_true", help="check and say what would be done, change nothing")
    args = parser.parse_args(argv)
    runner = LabRunner() if args.lab else SsmRunner(args.stack, args.region, purpose="scripts/reseed")
    try:
        reseed(runner, args.host, dry_run=args.dry_run)
    except ReseedRefused as refusal:
        print(f"scripts/reseed: refused: {refusal}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        print(f"scripts/reseed: failed: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
