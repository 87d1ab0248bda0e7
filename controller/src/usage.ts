/** `drover-controller --help`: what the daemon takes, in the order its config is compiled. */

/** The usage text `drover-controller --help` prints. */
export const CONTROLLER_USAGE = `Usage: drover-controller [options]

Runs the Drover controller: it serves drover.ctl.* over NATS, keeps cluster state in JetStream
and acts only while it holds the leadership lease (run several for HA; one acts at a time).
Settings compile as defaults < --config file < DROVER_* environment < flags.

Options:
  -c, --config FILE              JSON config file (the fields of ControllerConfigInput)
      --id ID                    this controller's name, the lease holder id
                                 (DROVER_CONTROLLER_ID; default controller-<hostname>-<pid>)
      --nats URLS                NATS server(s), comma-separated (DROVER_NATS_SERVERS)
      --nats-ca FILE             TLS: the cluster CA (DROVER_NATS_CA)
      --nats-cert FILE           TLS: the controller's certificate, a controller identity
                                 from \`drover certs\` (DROVER_NATS_CERT)
      --nats-key FILE            TLS: its key (DROVER_NATS_KEY)
      --unreachable-ms MS        a host without heartbeat this long is unreachable
      --lease-ms MS              leadership lease TTL
      --replicas 1|3             JetStream replicas of cluster state (3 on a 3-node NATS)
      --image-retention N        complete image sets kept per job
      --dumps-per-host N         a cluster checkpoint's dumps at once on a host
                                 (default 0: one per CPU of the host)
      --audit-retention-days N   days the audit stream keeps records
      --log-level LEVEL          debug, info, warn or error
      --metrics-addr HOST:PORT   serve Prometheus metrics there (off by default)
      --job-subnet CIDR          jobs' own addresses come from this subnet
      --job-gateway ADDRESS      the job segment's gateway
      --job-range FIRST-LAST     the part of the subnet the controller hands out
  -h, --help                     print this help and exit

Exit codes: 0 stopped, 1 failed, 2 bad config or flags, 3 lost the leadership lease.
`;
