/**
 * Who may do what on NATS: the roles of Drover's identities (certificate subjects), the subjects
 * each role may publish and subscribe to, and each identity's inbox prefix. Pure data: the NATS
 * server configuration is generated from it (`@drover/certs`), and clients take their inbox
 * prefix from it.
 */
import type { AgentOp } from './agent-api.js';
import type { Identity } from './identity.js';
import type { ControllerOp } from './controller-api.js';
import {
  agentSubject,
  agentWildcard,
  AUDIT_SUBJECT_PREFIX,
  CONTROLLER_WILDCARD,
  controllerSubject,
  EVENT_WILDCARD,
  HEARTBEAT_WILDCARD,
  heartbeatSubject,
  hostEventWildcard,
  IMAGE_SET_BUCKET,
  LIVENESS_WILDCARD,
  livenessSubject,
} from './names.js';

/**
 * Where an identity's replies arrive. The controller uses the default `_INBOX`; everyone else
 * gets a prefix of their own, so nobody but the controller can subscribe to another client's
 * replies (object-store chunks of image sets travel to inboxes too).
 */
export function inboxPrefixOf(id: Identity): string {
  return id.role === 'controller' ? '_INBOX' : `_INBOX.${id.role}.${id.name}`;
}

/**
 * Whether each controller operation only reads (a viewer may call it) or changes something.
 * Typed over every operation: a new one does not compile until it is classified.
 */
export const CONTROLLER_OP_ACCESS: { readonly [Op in ControllerOp]: 'read' | 'change' } = {
  hosts: 'read',
  jobs: 'read',
  inspect: 'read',
  logs: 'read',
  preflight: 'read',
  ops: 'read',
  status: 'read',
  events: 'read',
  audit: 'read',
  'images-list': 'read',
  'images-inspect': 'read',
  'images-decode': 'read',
  resolve: 'read',
  run: 'change',
  signal: 'change',
  stop: 'change',
  'tty-write': 'change',
  migrate: 'change',
  drain: 'change',
  cordon: 'change',
  uncordon: 'change',
  'hosts-remove': 'change',
  adopt: 'change',
  checkpoint: 'change',
  restore: 'change',
  'images-delete': 'change',
  'jobs-remove': 'change',
  'jobs-prune': 'change',
};

/**
 * What one agent may ask of another during a migration (the source asks the destination):
 * facts about it, whether files exist there, and the destination's side of the handshake.
 * Everything else (run, signal, checkpoint, restore, migrate, migrate-authorize, ...) only the
 * controller may ask: an agent can neither command a peer nor allow itself onto one.
 */
export const AGENT_PEER_OPS = [
  'info',
  'files-check',
  'migrate-prepare',
  'migrate-abort',
  'migrate-commit',
  'migrate-status',
] as const satisfies readonly AgentOp[];

/** The subjects one identity may publish and subscribe to. */
export interface SubjectPermissions {
  readonly publish: readonly string[];
  readonly subscribe: readonly string[];
  /** May answer requests it received (publish to their reply subjects only). */
  readonly allowResponses: boolean;
}

/** JetStream API subjects that act on one stream (reads, ephemeral consumers, purges). */
function streamApi(stream: string): string[] {
  return [
    `$JS.API.STREAM.INFO.${stream}`,
    `$JS.API.STREAM.MSG.GET.${stream}`,
    `$JS.API.DIRECT.GET.${stream}`,
    `$JS.API.DIRECT.GET.${stream}.>`,
    `$JS.API.CONSUMER.CREATE.${stream}`,
    `$JS.API.CONSUMER.CREATE.${stream}.>`,
    `$JS.API.CONSUMER.INFO.${stream}.*`,
    `$JS.API.CONSUMER.DELETE.${stream}.*`,
    `$JS.API.CONSUMER.MSG.NEXT.${stream}.*`,
    `$JS.FC.${stream}.>`,
    `$JS.ACK.${stream}.>`,
  ];
}

/** The permissions of `id`: exactly what its role needs, nothing more. */
export function permissionsOf(id: Identity): SubjectPermissions {
  const inbox = `${inboxPrefixOf(id)}.>`;
  switch (id.role) {
    case 'controller':
      return {
        publish: [
          agentSubject('*', '*'),
          LIVENESS_WILDCARD,
          '$JS.API.>',
          '$JS.ACK.>',
          '$JS.FC.>',
          '$KV.>',
          '$O.>',
          '_INBOX.>',
          controllerSubject('*', id),
          `${AUDIT_SUBJECT_PREFIX}>`,
        ],
        subscribe: [CONTROLLER_WILDCARD, HEARTBEAT_WILDCARD, EVENT_WILDCARD, '_INBOX.>'],
        allowResponses: true,
      };
    case 'agent': {
      const objectStream = `OBJ_${IMAGE_SET_BUCKET}`;
      return {
        publish: [
          heartbeatSubject(id.name),
          hostEventWildcard(id.name),
          ...AGENT_PEER_OPS.map((op) => agentSubject('*', op)),
          '$JS.API.INFO',
          ...streamApi(objectStream),
          `$O.${IMAGE_SET_BUCKET}.>`,
        ],
        subscribe: [agentWildcard(id.name), livenessSubject(id.name), inbox],
        allowResponses: true,
      };
    }
    case 'operator':
      return {
        publish: [controllerSubject('*', id)],
        subscribe: [HEARTBEAT_WILDCARD, EVENT_WILDCARD, inbox],
        allowResponses: false,
      };
    case 'viewer':
      return {
        publish: (Object.keys(CONTROLLER_OP_ACCESS) as ControllerOp[])
          .filter((op) => CONTROLLER_OP_ACCESS[op] === 'read')
          .map((op) => controllerSubject(op, id)),
        subscribe: [HEARTBEAT_WILDCARD, EVENT_WILDCARD, inbox],
        allowResponses: false,
      };
  }
}
