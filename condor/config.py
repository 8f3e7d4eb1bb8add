"""HTCondor configuration files of the pool's daemons: a domain's central manager and its startds.

Every daemon binds one address with IPv6 off and no shared port. Daemons authenticate to each other
with the domain's pool password (PASSWORD method, the key in a file only the daemons' user reads);
clients on the host read with no authentication and submit as the chroot's user (CLAIMTOBE), as a
personal HTCondor does. Imports the standard library only.
"""

from __future__ import annotations

#: Where the binaries and helpers are inside the chroot (Debian's layout).
LAYOUT = """RELEASE_DIR = /usr
BIN = /usr/bin
SBIN = /usr/sbin
LIB = /usr/lib/condor
LIBEXEC = /usr/libexec/condor
SHARE = /usr/share/condor
"""

COMMON = """# elastic-pool: {role} of domain {domain}
LOCAL_DIR = {local_dir}
LOG = $(LOCAL_DIR)/log
SPOOL = $(LOCAL_DIR)/spool
EXECUTE = $(LOCAL_DIR)/execute
LOCK = $(LOCAL_DIR)/lock
RUN = $(LOCAL_DIR)/run
{layout}
NETWORK_INTERFACE = {host}
BIND_ALL_INTERFACES = False
ENABLE_IPV6 = FALSE
USE_SHARED_PORT = False
CONDOR_HOST = {collector}
COLLECTOR_HOST = {collector}
UID_DOMAIN = elastic-pool
TRUST_UID_DOMAIN = True
SEC_USE_FAMILY_SESSION = False
SEC_PASSWORD_DIRECTORY = $(LOCAL_DIR)/passwords.d
SEC_TOKEN_SYSTEM_DIRECTORY = $(LOCAL_DIR)/tokens.d
SEC_DEFAULT_AUTHENTICATION = REQUIRED
SEC_DEFAULT_INTEGRITY = REQUIRED
SEC_DEFAULT_AUTHENTICATION_METHODS = PASSWORD
SEC_CLIENT_AUTHENTICATION_METHODS = PASSWORD, CLAIMTOBE
SEC_READ_AUTHENTICATION = OPTIONAL
SEC_READ_INTEGRITY = OPTIONAL
SEC_WRITE_AUTHENTICATION_METHODS = CLAIMTOBE, PASSWORD
ALLOW_READ = *
ALLOW_WRITE = *
ALLOW_DAEMON = condor_pool@*
ALLOW_NEGOTIATOR = condor_pool@*
ALLOW_ADMINISTRATOR = condor_pool@*
UPDATE_INTERVAL = 5
RUNBENCHMARKS = 0
STARTD_DETECT_GPUS = false
"""

CENTRAL = """DAEMON_LIST = MASTER COLLECTOR NEGOTIATOR SCHEDD
COLLECTOR_NAME = elastic-pool {domain}
SCHEDD_NAME = {schedd}
# a startd that stops updating is forgotten within 30 s, so nothing is matched to a gone machine
CLASSAD_LIFETIME = 30
SCHEDD_INTERVAL = 5
NEGOTIATOR_INTERVAL = 2
NEGOTIATOR_CYCLE_DELAY = 2
NEGOTIATOR_UPDATE_AFTER_CYCLE = True
SHADOW_QUEUE_UPDATE_INTERVAL = 10
# a job whose startd vanished runs again after this many seconds (Condor's own requeue): the
# client sets a job's lease at submit (40 minutes by default), so the schedd caps it
JOB_DEFAULT_LEASE_DURATION = {job_lease}
JOB_TRANSFORM_NAMES = $(JOB_TRANSFORM_NAMES) PoolLease
JOB_TRANSFORM_PoolLease @=end
   REQUIREMENTS JobLeaseDuration =?= undefined || JobLeaseDuration > {job_lease}
   SET JobLeaseDuration {job_lease}
@end
"""

STARTD = """DAEMON_LIST = MASTER STARTD
MASTER_NAME = {node}
STARTD_NAME = {node}
NUM_CPUS = {cpus}
MEMORY = {memory}
DISK = {disk}
NUM_SLOTS_TYPE_1 = 1
SLOT_TYPE_1 = cpus=100%, memory=100%, disk=100%
SLOT_TYPE_1_PARTITIONABLE = True
START = True
SUSPEND = False
PREEMPT = False
KILL = False
WANT_VACATE = False
# a graceful drain lets running jobs finish up to the domain's drain deadline
MAXJOBRETIREMENTTIME = {retirement}
PoolDomain = "{domain}"
PoolNode = "{node}"
STARTD_ATTRS = $(STARTD_ATTRS) PoolDomain PoolNode
STARTER_UPDATE_INTERVAL = 5
"""


def central_config(*, domain: str, local_dir: str, host: str, collector: str, schedd: str, job_lease: float) -> str:
    """The central manager of a domain: collector, negotiator and a schedd."""
    return (COMMON.format(role="central manager", domain=domain, local_dir=local_dir, layout=LAYOUT, host=host,
                          collector=collector)
            + CENTRAL.format(domain=domain, schedd=schedd, job_lease=int(job_lease)))


def startd_config(*, domain: str, node: str, local_dir: str, host: str, collector: str, cpus: int, memory: int,
                  disk: int, retirement: float) -> str:
    """One worker: a startd with one partitionable slot of the worker's size, naming its domain and node."""
    return (COMMON.format(role=f"startd {node}", domain=domain, local_dir=local_dir, layout=LAYOUT, host=host,
                          collector=collector)
            + STARTD.format(node=node, cpus=cpus, memory=memory, disk=disk, domain=domain,
                            retirement=int(retirement)))


LOCAL_SUBDIRS = ("log", "spool", "execute", "lock", "run", "tokens.d", "passwords.d")
