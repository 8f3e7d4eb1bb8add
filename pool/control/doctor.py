"""The doctor: every record's lifecycle from its heartbeats and the site's listing.

PENDING -> STARTED -> JOINED from the agent's beats (or the site's report that the machine runs);
silence, a dead workload, the boot timeout, a preemption notice, a drain deadline or a machine the
site no longer lists end a node; ending nodes are terminated again with growing waits and retired
when no listing answers; preempted nodes are drained once replaced; zombies (machines tagged as the
domain's that no record knows) are found. Pure: works on a :class:`~pool.control.draft.Draft`.
"""

from __future__ import annotations

from typing import AbstractSet

from pool.control.draft import (
    BOOT_FAILURE,
    END_RETRIES,
    END_RETRY_CAP,
    ENDING_STATES,
    LISTING_GRACE,
    RETIRED,
    RETRY_NOTE,
    TERMINATED_RETENTION,
    Draft,
    Observation,
    S,
    Termination,
)
from pool.core.keys import TAG_DOMAIN
from pool.core.model import Heartbeat, NodeRecord
from pool.sites.provisioner import SiteNode


def end_retries(rec: NodeRecord) -> int:
    """The terminate retries made for ``rec`` in its current state (its latest history notes)."""
    count = 0
    for state, _, detail in reversed(rec.history):
        if state != rec.state.value or not detail.startswith(RETRY_NOTE):
            break
        count += 1
    return count

def launch_refused(rec: NodeRecord) -> bool:
    """Whether ``rec`` failed because its launch was refused, so that no machine of it can exist.

    No machine id, never past REQUESTED, and failed by the answer to its launch. A launch is
    idempotent under its launch id (a client token, or a search for the tag before launching),
    so a refusal means nothing was made under that id; a token reused with other arguments
    (``IdempotentParameterMismatch``) is no such refusal. A record withdrawn while its site was
    unavailable may have had an earlier try that reached the site: that one is not refused.
    """
    if rec.state is not S.FAILED or rec.provider_id is not None:
        return False
    if any(state not in (S.REQUESTED.value, S.FAILED.value) for state, _, _ in rec.history):
        return False
    detail = next((d for state, _, d in rec.history if state == S.FAILED.value), "")
    return detail.startswith("launch failed") and "IdempotentParameterMismatch" not in detail

def end_retry_wait(rec: NodeRecord, terminate_grace: float) -> float:
    """Seconds after its last change or retry before ``rec`` (ending) is terminated again: doubling, capped."""
    return min(END_RETRY_CAP, (terminate_grace + 15.0) * 2.0 ** min(end_retries(rec), 32))

def _retired(rec: NodeRecord) -> bool:
    """A TERMINATED record retired without its machine confirmed gone (see :data:`END_RETRIES`)."""
    return bool(rec.history) and rec.history[-1][2].startswith(RETIRED)

def doctor(d: Draft, roles: AbstractSet[str]) -> None:
    """Every record's lifecycle from its heartbeats and the site's listing (the doctor), and what the
    listing says (the provisioner): machines gone, machines running, zombies."""
    obs = d.obs
    doctoring = "doctor" in roles
    # the steady state is decided inline, with what it reads held in locals: it is most nodes in
    # most ticks (10,000 function calls a tick cost more than the rest of the loop)
    now, back, timeout = obs.now, obs.store_back_at, obs.spec.timeouts.heartbeat_timeout
    hb_get, unlisted = obs.heartbeats.get, obs.unlisted
    listed_get = obs.site_nodes.get if obs.site_nodes is not None else None
    for rec in obs.nodes:
        # a joined worker beating in time, its workload alive, no preemption notice, and listed
        # alive by its site (or not judged by a listing this tick): nothing to do
        if doctoring and rec.state is S.JOINED:
            hb = hb_get(rec.node_id)
            if (hb is not None and hb.workload_alive and hb.preempt_notice is None
                    and now - max(hb.time, back) <= timeout):
                if listed_get is None or rec.site in unlisted:
                    continue
                listed = listed_get(rec.node_id)
                if listed is not None and listed.alive:
                    continue
        if rec.state == S.TERMINATED:
            if "provisioner" in roles and now - rec.since > TERMINATED_RETENTION:
                d.forget.append(rec)
            continue
        judged, listed = _listing_of(obs, rec)
        current = _by_listing(d, rec, judged, listed)
        if current is not None and doctoring:
            _by_heartbeat(d, current, judged, listed)
    if doctoring:
        drain_preempted(d)
    if obs.site_nodes is not None:
        find_zombies(d)


def _listing_of(obs: Observation, rec: NodeRecord) -> tuple[bool, SiteNode | None]:
    """Whether this tick's listing judges the record (it was launched before the listing), and its entry."""
    if obs.site_nodes is None:
        return False, None
    judged = rec.site not in obs.unlisted and (rec.entered(S.PENDING) or rec.created) < obs.listed_at
    return judged, obs.site_nodes.get(rec.node_id)

def _by_listing(d: Draft, rec: NodeRecord, judged: bool, listed: SiteNode | None) -> NodeRecord | None:
    """PENDING -> STARTED when the site reports the machine running; a machine the listing no longer
    has is gone (``None``: the record ended here)."""
    if judged and rec.state != S.REQUESTED and not (listed and listed.alive):
        if not (rec.state == S.PENDING and listed is None and d.now - rec.since < LISTING_GRACE):
            if rec.state in (S.PENDING, S.STARTED, S.JOINED):  # (a PENDING one may lag the listing a while)
                hb = d.obs.heartbeats.get(rec.node_id)
                d.lost.append((rec.node_id, hb.time if hb is not None else rec.since))
                rec = d.move(rec, S.UNHEALTHY, "machine gone")
            d.move(rec, S.TERMINATED, "machine gone" if rec.state == S.UNHEALTHY else "ended")
            return None
    if rec.state == S.PENDING and judged and listed is not None and listed.running:
        rec = d.move(rec, S.STARTED, "site reports it running")  # the lifecycle sensor
    return rec

def _by_heartbeat(d: Draft, rec: NodeRecord, judged: bool, listed: SiteNode | None) -> None:
    """PENDING -> STARTED -> JOINED from the agent's beats; silence, a dead workload, the boot
    timeout, a preemption notice and the drain deadline end a node; ending ones are retried."""
    now, t = d.now, d.obs.spec.timeouts
    hb = d.obs.heartbeats.get(rec.node_id)
    if rec.state == S.PENDING and hb is not None:
        rec = d.move(rec, S.STARTED, "agent heartbeat")
    if rec.state == S.STARTED and hb is not None and hb.ready:
        rec = d.move(rec, S.JOINED, "workload pulling work")
    # silence counts once the agent has beaten (before that, the boot timeout does)
    if rec.state in (S.JOINED, S.DRAINING) or (rec.state == S.STARTED and hb is not None):
        last = max(hb.time if hb is not None else rec.since, d.obs.store_back_at)
        if now - last > t.heartbeat_timeout:
            d.kill(rec, S.UNHEALTHY, f"no heartbeat for {now - last:.1f}s (timeout {t.heartbeat_timeout:g}s)")
            if rec.state != S.DRAINING:
                d.lost.append((rec.node_id, hb.time if hb is not None else rec.since))
            return
        if hb is not None and not hb.workload_alive and rec.state == S.STARTED:
            d.kill(rec, S.FAILED, f"{BOOT_FAILURE}: the workload exited before joining (`pool logs {rec.node_id}`)")
            return
        if hb is not None and not hb.workload_alive and rec.state != S.DRAINING:
            d.kill(rec, S.UNHEALTHY, "workload process died")
            d.lost.append((rec.node_id, hb.time))
            return
    if rec.state in (S.PENDING, S.STARTED) and now - (rec.entered(S.PENDING) or rec.created) > t.boot:
        d.kill(rec, S.FAILED, f"not joined within boot timeout {t.boot:g}s of launch")
    elif rec.state in (S.STARTED, S.JOINED) and hb is not None and hb.preempt_notice is not None:
        # the site will reclaim it: it stops counting (so it is replaced now) but keeps serving
        # until its replacement joins (or half its drain window passed), then drains
        d.move(rec, S.DRAINING, "preemption notice: replaced; serving until the replacement joins",
               drain_deadline=now + t.drain)
    elif rec.state == S.DRAINING:
        _drain_ends(d, rec, hb)
    elif rec.state in ENDING_STATES:
        _end_again(d, rec, listed if judged and listed is not None and listed.alive else None)

def _drain_ends(d: Draft, rec: NodeRecord, hb: Heartbeat | None) -> None:
    """The end of the scale-in handshake: a draining worker that reported drained (it holds no work)
    is terminated; one still holding work at its drain deadline is killed, and that is said."""
    t = d.obs.spec.timeouts
    if rec.drain_sent and hb is not None and hb.drained:
        d.kill(rec, S.TERMINATING, "drained: holds no work", grace=t.terminate_grace)
    elif rec.drain_deadline is not None and d.now > rec.drain_deadline:
        active = hb.active if hb is not None else None
        d.kill(rec, S.TERMINATING, f"drain deadline passed ({t.drain:g}s): killed while holding work")
        d.events.append(("drain_deadline", {"node": rec.node_id, "active": active, "drain": t.drain}))

def _end_again(d: Draft, rec: NodeRecord, alive: SiteNode | None) -> None:
    """A record being ended whose machine the site lists alive (``alive``), or that no listing judges
    (failing, backing off, broken site): retired when its launch was refused, else terminated again
    with growing waits, and retired after :data:`END_RETRIES` retries that no listing answered."""
    if alive is None and launch_refused(rec):  # nothing to end: no call
        d.move(rec, S.TERMINATED, f"{RETIRED}: its launch was refused; no machine to end")
        return
    if d.now - rec.since <= end_retry_wait(rec, d.obs.spec.timeouts.terminate_grace):
        return
    retries = end_retries(rec)
    if retries >= END_RETRIES and alive is None:
        why = "machine id unknown" if rec.provider_id is None else f"machine {rec.provider_id} may remain"
        d.move(rec, S.TERMINATED, f"{RETIRED} after {retries} terminate retries; no listing "
                                  f"of site {rec.site} shows it ({why})")
        d.events.append(("retired", {"node": rec.node_id, "site": rec.site, "retries": retries,
                                     "provider_id": rec.provider_id,
                                     "why": "no listing confirmed the machine gone; should it show "
                                            "up alive it is ended as a zombie"}))
        return
    d.note(rec, f"{RETRY_NOTE} {retries + 1}")
    by_listing = alive is not None and rec.provider_id is None
    d.terminations.append(Termination(rec.node_id, 0.0, "still there after terminate: kill",
                                      alive.provider_id if by_listing and alive is not None else None,
                                      rec.site if by_listing else ""))

def drain_preempted(d: Draft) -> None:
    """Preempted nodes still serving are drained once their replacements have joined (or half
    their drain window passed)."""
    waiting = [n for n in d.nodes.values() if n.state is S.DRAINING and not n.drain_sent]
    if not waiting:
        return
    now, t = d.now, d.obs.spec.timeouts
    waiting.sort(key=lambda n: n.since)
    joined_now = sum(1 for n in d.nodes.values() if n.state == S.JOINED)
    for rec in waiting:
        half = rec.since + (t.drain / 2)
        if joined_now >= d.obs.state.intended or now >= half:
            twin = d.twin(rec)
            twin.drain_sent = True  # the agent reads it: the drain handshake, as for scale-in
            d.events.append(("drain", {"node": twin.node_id, "why": "preempted: replacement joined" if now < half
                                       else "preempted: half the drain window passed",
                                       "deadline": round(twin.drain_deadline or now, 3)}))

def find_zombies(d: Draft) -> None:
    """Machines tagged as this domain's that no record knows (launched by a deposed leader, say)
    are ended. A record retired before its launch was accepted has no machine id, and one retired
    after its terminate retries was not seen gone: a machine of theirs that shows up is ended too."""
    spec = d.obs.spec
    assert d.obs.site_nodes is not None
    for node_id, listed in d.obs.site_nodes.items():
        known = d.nodes.get(node_id)
        if (listed.alive and (known is None or (known.state is S.TERMINATED
                                                and (known.provider_id is None or _retired(known))))
                and listed.tags.get(TAG_DOMAIN) == spec.name):
            d.terminations.append(Termination(node_id, 0.0, "zombie: no record", listed.provider_id,
                                              listed.site or spec.site))
            d.events.append(("zombie", {"node": node_id, "provider_id": listed.provider_id}))
