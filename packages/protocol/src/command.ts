/** A job's command line on the wire. */
import { arr, InvalidMessageError, str, type Schema } from './schema.js';

/**
 * A job's command: the program (not empty) and its arguments, any of which may be empty
 * (`redis-server --save ""` is a legal command line).
 */
export function commandSchema(): Schema<string[]> {
  const words = arr(str({ max: 4096 }), { min: 1, max: 256 });
  return {
    kind: 'command',
    parse(v, path = '') {
      const c = words.parse(v, path);
      if (c[0] === '')
        throw new InvalidMessageError(`${path}[0]`, 'the program to run may not be empty');
      return c;
    },
  };
}
