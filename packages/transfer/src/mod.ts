/**
 * @drover/transfer: the agent-to-agent stream that carries a checkpoint image set from the
 * source agent (`StreamClient`) to the destination agent (`StreamServer`, `receiveFiles`).
 */
export { TransferError, TransferErrorKind, isTransferError } from './errors.js';
export type { TransferErrorFields, TransferErrorOptions } from './errors.js';
export {
  FrameType,
  FrameDecoder,
  encodeFrame,
  encodeJsonFrame,
  FRAME_HEADER_BYTES,
  MAX_FRAME_PAYLOAD,
} from './frame.js';
export type { Frame } from './frame.js';
export { TRANSFER_PROTOCOL_VERSION, MAX_FILE_NAME_BYTES, fileNameProblem } from './messages.js';
export type { Hello, FileHeader, Totals } from './messages.js';
export type { TransferProgress, ProgressCallback } from './progress.js';
export {
  StreamServer,
  StreamReceiver,
  DEFAULT_HELLO_TIMEOUT_MS,
  DEFAULT_KEEPALIVE_MS,
} from './server.js';
export type { StreamServerOptions, ServerTlsOptions, ReceiverHandler } from './server.js';
export { receiveFiles, DEFAULT_IDLE_TIMEOUT_MS } from './receive.js';
export type { ReceiveOptions } from './receive.js';
export { StreamClient, DATA_CHUNK_BYTES } from './client.js';
export type { StreamClientOptions, ClientTlsOptions, TransferFaults } from './client.js';
