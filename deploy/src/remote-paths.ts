/** Fixed paths and names on hosts. */

/** PATH for every remote script and for the agent (CRIU is installed in /usr/local/sbin). */
export const REMOTE_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** The systemd unit's name. */
export const UNIT_NAME = 'drover-agent.service';
/** Where the unit file goes on systemd hosts. */
export const UNIT_PATH = `/etc/systemd/system/${UNIT_NAME}`;
