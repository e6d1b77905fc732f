import { describe, expect, it } from 'vitest';
import { createKeyedQueue } from '../../agent/reconcile/queue.ts';

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

describe('keyed queue', () => {
  it('runs one worker per key at a time and re-runs once for events that arrived meanwhile', async () => {
    const runs: string[] = [];
    let active = 0;
    let maxActivePerKey = 0;
    const perKey = new Map<string, number>();
    const q = createKeyedQueue({
      worker: async (key) => {
        perKey.set(key, (perKey.get(key) ?? 0) + 1);
        maxActivePerKey = Math.max(maxActivePerKey, perKey.get(key)!);
        active++;
        runs.push(key);
        await tick(5);
        active--;
        perKey.set(key, perKey.get(key)! - 1);
      },
      onError: () => undefined,
    });
    q.enqueue('a');
    await tick(1);
    for (let i = 0; i < 10; i++) q.enqueue('a'); // a burst while 'a' runs collapses into one more run
    q.enqueue('b');
    await q.drain();
    expect(maxActivePerKey).toBe(1);
    expect(runs.filter((k) => k === 'a')).toHaveLength(2);
    expect(runs.filter((k) => k === 'b')).toHaveLength(1);
    expect(active).toBe(0);
  });

  it('keeps going after a worker fails and reports the error', async () => {
    const errors: string[] = [];
    const q = createKeyedQueue({
      worker: async (key) => {
        if (key === 'bad') throw new Error('boom');
      },
      onError: (key, err) => errors.push(`${key}: ${(err as Error).message}`),
    });
    q.enqueue('bad');
    q.enqueue('good');
    await q.drain();
    expect(errors).toEqual(['bad: boom']);
  });

  it('bounds concurrency across keys', async () => {
    let active = 0;
    let peak = 0;
    const q = createKeyedQueue({
      worker: async () => {
        active++;
        peak = Math.max(peak, active);
        await tick(2);
        active--;
      },
      onError: () => undefined,
      concurrency: 3,
    });
    for (let i = 0; i < 20; i++) q.enqueue(`k${i}`);
    await q.drain();
    expect(peak).toBe(3);
    expect(q.depth).toBe(0);
  });
});
