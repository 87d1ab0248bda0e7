/** `drover-agent --help`: what the daemon takes, in the order its config is compiled. */

/** The usage text `drover-agent --help` prints. */
export const AGENT_USAGE = `Usage: drover-agent [options]

Runs the Drover agent of one host: it starts, checkpoints, restores and migrates jobs there,
as the controller asks over NATS. Settings compile as defaults < --config file < DROVER_*
environment < flags.

Options:
  -c, --config FILE          JSON config file (what drover-deploy writes as etc/agent.json)
      --host-id ID           this host's id (DROVER_HOST_ID)
      --state-dir DIR        job records and images (DROVER_STATE_DIR)
      --nats URLS            NATS server(s), comma-separated (DROVER_NATS_SERVERS)
      --nats-ca FILE         TLS: the cluster CA (DROVER_NATS_CA)
      --nats-cert FILE       TLS: this host's agent certificate (DROVER_NATS_CERT)
      --nats-key FILE        TLS: its key (DROVER_NATS_KEY)
      --nats-creds FILE      NATS credentials file (DROVER_NATS_CREDS)
      --nats-user USER       NATS user (DROVER_NATS_USER)
      --nats-pass PASS       NATS password (DROVER_NATS_PASS)
      --stream-listen A:P    where the migration stream listens (DROVER_STREAM_LISTEN)
      --stream-ca FILE       mutual TLS of migration streams: the CA (DROVER_STREAM_CA)
      --stream-cert FILE     the stream certificate (DROVER_STREAM_CERT)
      --stream-key FILE      its key (DROVER_STREAM_KEY)
      --heartbeat-ms MS      heartbeat interval (DROVER_HEARTBEAT_MS)
      --criu PATH            the criu binary (DROVER_CRIU)
      --cgroup-parent NAME   parent cgroup of jobs (DROVER_CGROUP_PARENT)
      --log-level LEVEL      debug, info, warn or error (DROVER_LOG_LEVEL)
      --reserve-memory SIZE  memory kept free of jobs (DROVER_RESERVE_MEMORY)
      --max-jobs N           jobs this host accepts (DROVER_MAX_JOBS)
      --cut-priority N       SCHED_FIFO priority of the cut timer during a scheduled cut,
                             0 for none (DROVER_CUT_PRIORITY, default 10)
      --restore-timeout-ms N the longest an incoming restore may run, then it is rolled back
                             (DROVER_RESTORE_TIMEOUT_MS, default 60000)
      --metrics-addr A:P     serve Prometheus metrics there (DROVER_METRICS_ADDR)
      --job-bridge IFNAME    the bridge jobs with their own address hang off (DROVER_JOB_BRIDGE)
      --checkpoint-opt OPT   a CRIU checkpoint option (repeatable; DROVER_CHECKPOINT_OPTS)
  -h, --help                 print this help and exit

Stopping the agent (SIGTERM) leaves its jobs running; the next agent adopts them.
With DROVER_CPU_PROFILE_DIR=DIR it profiles its own CPU; each SIGUSR2 writes a profile there
(docs/OBSERVABILITY.md).
`;
