/**
 * The framing of CRIU's image files: a magic (IMG_COMMON or IMG_SERVICE, then the image's own),
 * then entries, each a little-endian u32 size and that many bytes of protobuf. A pagemap starts
 * with a `pagemap_head` entry. Decoding and, for tests, encoding (`encodeImage`): a pair.
 */
import { DroverError, ErrorCode } from '@drover/common';
import { Magic, MessageTypes, type MessageType } from './image-schema.js';

/** The largest entry decoded (CRIU's biggest messages are a few MiB of mappings). */
const MAX_ENTRY_BYTES = 64 * 1024 * 1024;

/** A malformed image file. */
export class ImageFormatError extends DroverError {
  constructor(file: string, problem: string) {
    super(ErrorCode.DataLoss, `${file}: ${problem}`, { details: { file } });
  }
}

/** A decoded message as a plain object: uint64s as decimal strings (addresses exceed 2^53). */
export type Decoded = Record<string, unknown>;

/**
 * The entries of an image file of `type` (checked against the file's magic), oldest first.
 * `file` names it in errors.
 */
export function decodeImage(file: string, bytes: Uint8Array, type: MessageType): Decoded[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.byteLength < 4) throw new ImageFormatError(file, 'too short for a magic');
  let at = 0;
  let magic = view.getUint32(0, true);
  at = 4;
  if (magic === Magic.common || magic === Magic.service) {
    if (bytes.byteLength < 8) throw new ImageFormatError(file, 'too short for its magic');
    magic = view.getUint32(4, true);
    at = 8;
  }
  const expected = magicOf(type);
  if (magic !== expected) {
    throw new ImageFormatError(
      file,
      `magic 0x${magic.toString(16)} is not a ${type} image's (0x${expected.toString(16)})`,
    );
  }
  const out: Decoded[] = [];
  let first = true;
  while (at < bytes.byteLength) {
    if (at + 4 > bytes.byteLength) throw new ImageFormatError(file, `cut entry header at ${at}`);
    const size = view.getUint32(at, true);
    at += 4;
    if (size > MAX_ENTRY_BYTES || at + size > bytes.byteLength)
      throw new ImageFormatError(file, `entry of ${size} bytes at ${at - 4} runs past the end`);
    // A pagemap's first entry is its head; the rest are pagemap entries.
    const t = type === 'pagemap' && first ? MessageTypes.pagemapHead : MessageTypes[type];
    try {
      const msg = t.decode(bytes.subarray(at, at + size));
      out.push(t.toObject(msg, { longs: String, enums: Number, bytes: Buffer }) as Decoded);
    } catch (err) {
      throw new ImageFormatError(file, `undecodable ${type} entry at ${at - 4}: ${String(err)}`);
    }
    at += size;
    first = false;
  }
  return out;
}

/** An image file holding `entries` (for tests: the other half of {@link decodeImage}). */
export function encodeImage(type: MessageType, entries: readonly Decoded[]): Uint8Array {
  const parts: Uint8Array[] = [];
  const word = (n: number): Uint8Array => {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, n, true);
    return b;
  };
  // CRIU writes IMG_COMMON before every image's own magic but the service files' (the decoder
  // takes either, or none).
  parts.push(word(Magic.common), word(magicOf(type)));
  entries.forEach((e, i) => {
    const t = type === 'pagemap' && i === 0 ? MessageTypes.pagemapHead : MessageTypes[type];
    const body = t.encode(t.fromObject(e)).finish();
    parts.push(word(body.byteLength), body);
  });
  return Buffer.concat(parts);
}

function magicOf(type: MessageType): number {
  switch (type) {
    case 'pagemapHead':
      return Magic.pagemap;
    default:
      return Magic[type];
  }
}
