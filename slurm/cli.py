"""`pool slurm`: the programs slurmctld calls on power saving (resume, suspend, resume-fail) and the
slurm.conf lines of a domain.

The programs hand the request to the domain manager through the store (one Redis call, durable
once they return) and exit at once: slurmctld waits for nothing. Imports ``pool.core``,
``pool.state``, click and the rest of ``slurm``; ``pool.cli.commands`` when run.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import click

from pool.core.model import ID_RE
from pool.core.secrets import redact_text
from pool.state.redisserver import state_dir, write_private
from slurm.hostlist import HostlistError, expand, fold

DOMAIN_ENV = "POOL_SLURM_DOMAIN"


def _fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"error: {' '.join(redact_text(str(message)).split())[:400]}", err=True)
    sys.exit(code)


def _names(hostlist: str) -> list[str]:
    try:
        names = expand(hostlist)
    except HostlistError as exc:
        _fail(f"hostlist {hostlist[:100]!r}: {exc}")
    bad = [n for n in names if not ID_RE.fullmatch(n)]
    if bad or not names:
        _fail(f"hostlist {hostlist[:100]!r}: {bad[0][:64]!r} is not a node name" if bad else "empty hostlist")
    return names


def _domain_store(domain: str | None) -> tuple[str, Any]:
    """The domain (from --domain or $POOL_SLURM_DOMAIN) and the pool's store; a slurm-node domain."""
    from pool.cli.commands import open_store

    domain = domain or os.environ.get(DOMAIN_ENV)
    if not domain:
        _fail(f"which domain? give --domain NAME or set {DOMAIN_ENV}")
    _, store = open_store(start=False)
    spec = store.get_domain(domain)
    if spec is None or spec.deployable_type != "slurm-node":
        _fail(f"no slurm-node domain {domain!r} in this pool (`pool apply -f examples/slurm-domain.yaml`)")
    return domain, store


@click.group("slurm")
def slurm() -> None:
    """Slurm domains: slurmctld's power-saving programs, and the slurm.conf lines to paste."""


def _request(kind: str, hostlist: str, domain: str | None) -> None:
    names = _names(hostlist)
    domain, store = _domain_store(domain)
    now = time.time()
    if kind == "resume":
        store.want(domain, names, now)
    else:
        store.unwant(domain, names)
    store.record(domain, "slurm", now, what=kind, nodes=fold(names), count=len(names))


@slurm.command("resume")
@click.argument("hostlist")
@click.option("--domain", "-d", default=None, help=f"the domain (default: ${DOMAIN_ENV})")
def resume(hostlist: str, domain: str | None) -> None:
    """ResumeProgram: a worker for each node of HOSTLIST, running slurmd under that name."""
    _request("resume", hostlist, domain)


@slurm.command("suspend")
@click.argument("hostlist")
@click.option("--domain", "-d", default=None, help=f"the domain (default: ${DOMAIN_ENV})")
def suspend(hostlist: str, domain: str | None) -> None:
    """SuspendProgram: the workers of HOSTLIST's nodes are terminated."""
    _request("suspend", hostlist, domain)


@slurm.command("resume-fail")
@click.argument("hostlist")
@click.option("--domain", "-d", default=None, help=f"the domain (default: ${DOMAIN_ENV})")
def resume_fail(hostlist: str, domain: str | None) -> None:
    """ResumeFailProgram: slurmctld gave up on HOSTLIST's nodes; their workers are terminated."""
    _request("resume-fail", hostlist, domain)


def programs_dir(domain: str) -> Path:
    return state_dir() / "slurm" / domain


def write_programs(domain: str, *, redis_url: str, namespace: str, resume_timeout: int = 150,
                   slurm_conf: str | None = None) -> dict[str, Path]:
    """The executables slurmctld calls for ``domain`` (0700: they hold the store's URL), and a
    PrologSlurmctld that lets a job start as soon as its powered-up nodes registered."""
    directory = programs_dir(domain)
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    out = {}
    for kind in ("resume", "suspend", "resume-fail"):
        path = directory / kind
        write_private(path, "#!/bin/sh\n# slurmctld's " + kind + " program for domain " + domain + "\n"
                      "# (slurmctld gives it no PATH and closes its output)\n"
                      "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
                      f"export REDIS_URL={shlex.quote(redis_url)} POOL_NAMESPACE={shlex.quote(namespace)}\n"
                      f"export {DOMAIN_ENV}={shlex.quote(domain)}\n"
                      f"exec {shlex.quote(sys.executable)} -m pool.cli slurm {kind} \"$1\"\n")
        path.chmod(0o700)
        out[kind] = path
    from slurm.prolog import prolog_text

    prolog = directory / "prolog"
    prolog.write_text(prolog_text(who=f"elastic-pool domain {domain}", timeout=resume_timeout, conf=slurm_conf))
    prolog.chmod(0o700)
    out["prolog"] = prolog
    return out


@slurm.command("config")
@click.argument("domain")
@click.option("--slurm-conf", default=None, type=click.Path(dir_okay=False),
              help="slurm.conf on slurmctld's machine, for the prolog's sinfo (default: sinfo's default)")
def config(domain: str, slurm_conf: str | None) -> None:
    """Print the slurm.conf lines for DOMAIN (and write the programs slurmctld calls)."""
    from pool.cli.commands import open_store
    from slurm.conf import domain_conf

    url, store = open_store(start=False)
    spec = store.get_domain(domain)
    if spec is None or spec.deployable_type != "slurm-node":
        _fail(f"no slurm-node domain {domain!r} in this pool")
    from slurm.conf import resume_timeout

    if slurm_conf is not None and (not slurm_conf.startswith("/") or not slurm_conf.isprintable() or " " in slurm_conf):
        _fail(f"--slurm-conf {slurm_conf[:100]!r}: give an absolute path without spaces")
    programs = write_programs(domain, redis_url=url, namespace=store.ns, resume_timeout=resume_timeout(spec),
                              slurm_conf=slurm_conf)
    click.echo(domain_conf(spec, programs))
