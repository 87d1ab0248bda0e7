/** An {@link ImageSource} over a directory of plain CRIU image files (`criu dump -D DIR`). */
import { open, readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { ImageSource } from './checkpoint-contents.js';

/** The image files of `dir` (regular files only). */
export async function directorySource(dir: string): Promise<ImageSource> {
  const files = new Map<string, number>();
  for (const e of await readdir(dir, { withFileTypes: true })) {
    if (e.isFile()) files.set(e.name, (await stat(join(dir, e.name))).size);
  }
  return {
    files,
    read: (name) => readFile(join(dir, name)),
    async readRanges(name, ranges) {
      const fh = await open(join(dir, name), 'r');
      try {
        const out: Uint8Array[] = [];
        for (const r of ranges) {
          const buf = Buffer.alloc(r.length);
          const { bytesRead } = await fh.read(buf, 0, r.length, r.offset);
          out.push(buf.subarray(0, bytesRead));
        }
        return out;
      } finally {
        await fh.close();
      }
    },
  };
}
