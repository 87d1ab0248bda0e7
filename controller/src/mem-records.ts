/** Test support: state records in memory (a StateStore's get/put/create/mutate/delete/list). */
import { DroverError, ErrorCode } from '@drover/common';
import type { Records } from './op-record.js';

/** Records in a Map, each read a copy; revisions count up. */
export class MemRecords<T> implements Records<T> {
  private readonly m = new Map<string, { value: T; revision: number }>();
  private rev = 0;
  async get(k: string): Promise<{ value: T; revision: number } | null> {
    const v = this.m.get(k);
    return v ? structuredClone(v) : null;
  }
  async put(k: string, value: T): Promise<number> {
    this.m.set(k, { value: structuredClone(value), revision: ++this.rev });
    return this.rev;
  }
  async create(k: string, value: T): Promise<number> {
    if (this.m.has(k)) throw new DroverError(ErrorCode.AlreadyExists, `${k} exists`);
    return this.put(k, value);
  }
  async mutate(
    k: string,
    fn: (cur: T | null) => T | null,
  ): Promise<{ value: T; revision: number } | null> {
    const next = fn(structuredClone(this.m.get(k)?.value ?? null));
    if (next === null) {
      this.m.delete(k);
      return null;
    }
    return { value: next, revision: await this.put(k, next) };
  }
  async delete(k: string): Promise<void> {
    this.m.delete(k);
  }
  async list(): Promise<Map<string, { value: T; revision: number }>> {
    return new Map([...this.m].map(([k, v]) => [k, structuredClone(v)]));
  }
}
