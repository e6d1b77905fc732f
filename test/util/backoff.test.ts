import { getEventListeners } from 'node:events';
import { describe, expect, it } from 'vitest';
import { backoffDelay, systemClock } from '../../agent/util/backoff.ts';

describe('systemClock.sleep', () => {
  it('leaves no abort listener behind once the timer fires (loops sleep on one long-lived signal)', async () => {
    const abort = new AbortController();
    for (let i = 0; i < 5; i++) await systemClock.sleep(1, abort.signal);
    expect(getEventListeners(abort.signal, 'abort')).toHaveLength(0);
  });

  it('ends early when the signal aborts, and at once when it already has', async () => {
    const abort = new AbortController();
    const started = Date.now();
    const sleeping = systemClock.sleep(60_000, abort.signal);
    setTimeout(() => abort.abort(), 5);
    await sleeping;
    await systemClock.sleep(60_000, abort.signal);
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(getEventListeners(abort.signal, 'abort')).toHaveLength(0);
  });
});

describe('backoffDelay', () => {
  it('grows with the attempt up to the cap, with full jitter', () => {
    const top = () => 0.999999;
    expect(backoffDelay(0, { baseMs: 100, maxMs: 1_000, random: top })).toBe(99);
    expect(backoffDelay(3, { baseMs: 100, maxMs: 1_000, random: top })).toBe(799);
    expect(backoffDelay(40, { baseMs: 100, maxMs: 1_000, random: top })).toBe(999);
    expect(backoffDelay(5, { baseMs: 100, maxMs: 1_000, random: () => 0 })).toBe(0);
  });
});
