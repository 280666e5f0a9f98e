import { mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { onTestFinished } from 'vitest';
import type { FakeClock } from '../../src/clock/fake.js';
import type { KeySource } from '../../src/store/key.js';

/** A fresh state directory for one test, removed when the test ends. */
export async function tempHome(): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'tether-store-'));
  onTestFinished(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** A key source that hands out a fixed key (all bytes `byte`). */
export function fixedKey(byte: number): KeySource {
  return { getKey: () => Promise.resolve(new Uint8Array(32).fill(byte)) };
}

/** Every file under `dir`, as paths relative to it, sorted. */
export async function listFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries
    .filter((e) => e.isFile())
    .map((e) => path.relative(dir, path.join(e.parentPath, e.name)))
    .sort();
}

/**
 * Awaits `promise` while moving fake time in small steps. Each step first
 * gives real file-system calls a real millisecond to complete, so that fake
 * time runs at most about `stepMs` per millisecond of I/O.
 */
export async function drive<T>(clock: FakeClock, promise: Promise<T>, stepMs = 5): Promise<T> {
  const state = { settled: false };
  promise.then(
    () => (state.settled = true),
    () => (state.settled = true),
  );
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, 1));
    if (state.settled) return promise;
    await clock.advance(stepMs);
  }
}
