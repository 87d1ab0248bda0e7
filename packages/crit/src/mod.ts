/** @drover/crit: what is inside a CRIU checkpoint, decoded from its image files (like CRIU's crit). */
export { decodeCheckpoint } from './checkpoint-contents.js';
export type { DecodeLimits, ImageSource } from './checkpoint-contents.js';
export { decodeImage, encodeImage, ImageFormatError } from './image-file.js';
export type { Decoded } from './image-file.js';
export { directorySource } from './directory-source.js';
