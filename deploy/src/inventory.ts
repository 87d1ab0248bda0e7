/**
 * The inventory: one YAML file naming the hosts (address, SSH port, user, key, pinned host key,
 * labels), NATS and the controller, with defaults and per-host overrides. Parsed, validated
 * (every problem listed at once) and compiled into a read-only `Inventory`.
 *
 * This file loads and compiles the whole; the parts live beside it: inventory-model.ts (the
 * compiled types and defaults), inventory-hosts.ts (`hosts` and `defaults`),
 * inventory-control.ts (`nats` and `controller`: the control plane's keys) and
 * inventory-fields.ts (the field readers).
 */
import { readFileSync } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import { CORE_SCHEMA, load, YAMLException } from 'js-yaml';
import { CONTEXT_NAME_PATTERN, DroverError, ErrorCode } from '@drover/common';
import { IDENTITY_NAME_PATTERN } from '@drover/protocol';
import { checkControlPlane, compileController, compileNats } from './inventory-control.js';
import { checkKeys, isObject, localPath, Problems, str } from './inventory-fields.js';
import { compileHost, HOST_SETTINGS } from './inventory-hosts.js';
import type { HostEntry, Inventory, InventoryOverrides } from './inventory-model.js';

export { fingerprintOf, parseHostKey, type PinnedHostKey } from './host-key.js';
export {
  ServiceMode,
  SetupMode,
  type AgentSettings,
  type ControllerInventory,
  type HostEntry,
  type Inventory,
  type InventoryOverrides,
  type NatsDeployment,
  type NatsInventory,
  type TlsFiles,
} from './inventory-model.js';

const TOP_KEYS = ['certs', 'context', 'nats', 'controller', 'defaults', 'hosts'];

/** The certificates directory: `--certs` (relative to the working directory), else `certs:`. */
function compileCerts(p: Problems, v: unknown, base: string, o: InventoryOverrides): string | null {
  if (o.certs !== undefined) return resolve(o.certs);
  const dir = str(p, 'certs', v);
  return dir === undefined ? null : localPath(base, dir);
}

/**
 * Validate a parsed inventory document; `path` is where it came from (relative paths), and
 * `overrides` what the command line says instead.
 */
export function compileInventory(
  doc: unknown,
  path: string,
  overrides: InventoryOverrides = {},
): Inventory {
  const base = dirname(path);
  const p = new Problems();
  if (!isObject(doc)) {
    throw new DroverError(ErrorCode.InvalidArgument, `inventory ${path}: expected a YAML map`);
  }
  checkKeys(p, 'inventory', doc, TOP_KEYS);
  const certs = compileCerts(p, doc.certs, base, overrides);
  let nats = compileNats(p, doc.nats, base);
  if (certs !== null && nats.tls)
    p.add('nats.tls', 'not with `certs`: the deployer issues and uploads each agent its own');
  let controller = compileController(p, doc.controller, nats);
  const defaults = doc.defaults ?? {};
  if (!isObject(defaults)) p.add('defaults', 'expected a map');
  else checkKeys(p, 'defaults', defaults, HOST_SETTINGS);
  const hosts: HostEntry[] = [];
  if (!Array.isArray(doc.hosts) || doc.hosts.length === 0) {
    p.add('hosts', 'required: a list of hosts');
  } else {
    doc.hosts.forEach((raw, i) => {
      const h = compileHost(p, i, raw, isObject(defaults) ? defaults : {}, base);
      if (h) hosts.push(h);
    });
  }
  const seen = new Map<string, string>();
  for (const h of hosts) {
    for (const [kind, value] of [
      ['name', h.name],
      ['address', `${h.address}:${h.port}`],
    ] as const) {
      const key = `${kind}=${value}`;
      if (seen.has(key))
        p.add(`hosts (${h.name})`, `duplicate ${kind} ${value} (also ${seen.get(key)})`);
      else seen.set(key, h.name);
    }
  }
  for (const h of hosts) {
    if (certs !== null && h.agent.streamTls)
      p.add(`hosts (${h.name}).agent.streamTls`, 'not with `certs`: the agent certificate serves');
    // The agent's NATS user is its certificate's subject: the host id must be one subject token.
    if (certs !== null && !IDENTITY_NAME_PATTERN.test(h.name))
      p.add(`hosts (${h.name}).name`, 'with `certs`, letters, digits, _ and - only (no dots)');
  }
  checkControlPlane(p, { certs, nats, controller, hosts });
  // Without `servers`, clients dial the NATS servers the deployer runs, at their hosts' addresses.
  if (nats.deploy && nats.servers.length === 0) {
    const d = nats.deploy;
    const servers = d.hosts.flatMap((n) => {
      const h = hosts.find((x) => x.name === n);
      return h ? [`nats://${h.address}:${d.port}`] : [];
    });
    nats = { ...nats, servers };
    if (controller.servers.length === 0) controller = { ...controller, servers };
  }
  const stateDirs = new Set(hosts.map((h) => h.stateDir));
  if (stateDirs.size > 1) {
    p.add(
      'hosts',
      `every host needs the same stateDir (jobs keep their paths); got ${[...stateDirs].join(', ')}`,
    );
  }
  const context = str(p, 'context', doc.context) ?? basename(path).replace(/\.[^.]*$/, '');
  if (!CONTEXT_NAME_PATTERN.test(context))
    p.add('context', `a context name is letters, digits, _ . - (got ${context})`);
  if (p.list.length > 0) throw invalid(path, p);
  return Object.freeze({ path, nats, controller, hosts: Object.freeze(hosts), certs, context });
}

function invalid(path: string, p: Problems): DroverError {
  return new DroverError(
    ErrorCode.InvalidArgument,
    `inventory ${path} is not valid:\n  ${p.list.join('\n  ')}`,
    { details: { path, problems: p.list } },
  );
}

/** Read and validate an inventory file. */
export function loadInventory(path: string, overrides: InventoryOverrides = {}): Inventory {
  const abs = resolve(path);
  let text: string;
  try {
    text = readFileSync(abs, 'utf8');
  } catch (err) {
    throw new DroverError(ErrorCode.InvalidArgument, `cannot read inventory ${abs}`, {
      cause: err,
    });
  }
  let doc: unknown;
  try {
    doc = load(text, { filename: abs, schema: CORE_SCHEMA });
  } catch (err) {
    const where =
      err instanceof YAMLException && err.mark
        ? ` line ${err.mark.line + 1}, column ${err.mark.column + 1}`
        : '';
    const reason = err instanceof YAMLException ? err.reason : String(err);
    throw new DroverError(ErrorCode.InvalidArgument, `inventory ${abs}${where}: ${reason}`, {
      cause: err,
    });
  }
  return compileInventory(doc, abs, overrides);
}

/** The hosts named in `names` (all when empty) that carry every `labels` pair, in inventory order. */
export function selectHosts(
  inv: Inventory,
  names: readonly string[],
  labels: readonly string[] = [],
): HostEntry[] {
  const unknown = names.filter((n) => !inv.hosts.some((h) => h.name === n));
  if (unknown.length > 0) {
    throw new DroverError(
      ErrorCode.NotFound,
      `no host ${unknown.join(', ')} in ${inv.path} (hosts: ${inv.hosts.map((h) => h.name).join(', ')})`,
    );
  }
  const pairs = labels.map((l) => {
    const i = l.indexOf('=');
    if (i <= 0)
      throw new DroverError(ErrorCode.InvalidArgument, `--label wants KEY=VALUE, got ${l}`);
    return [l.slice(0, i), l.slice(i + 1)] as const;
  });
  return inv.hosts.filter(
    (h) =>
      (names.length === 0 || names.includes(h.name)) && pairs.every(([k, v]) => h.labels[k] === v),
  );
}
