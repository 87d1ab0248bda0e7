/** The part of js-yaml 4 the inventory uses (the package ships no types). */
declare module 'js-yaml' {
  export interface LoadOptions {
    filename?: string;
    schema?: unknown;
    json?: boolean;
  }
  export const CORE_SCHEMA: unknown;
  export function load(text: string, options?: LoadOptions): unknown;
  export class YAMLException extends Error {
    reason: string;
    mark?: { line: number; column: number; name?: string };
  }
}
