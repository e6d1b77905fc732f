// Node facts: probed once (systeminformation runs lscpu), refreshed lazily, never a reason to fail a scrape.
import { describe, expect, test } from 'vitest';
import { createNodeFacts, probeSysteminformation, type NodeFacts } from '../../agent/node-facts.ts';

const facts = (cpus: number): NodeFacts => ({
  cpus,
  physicalCores: cpus,
  memoryBytes: 2 ** 30,
  cpuModel: 'X',
});

describe('node facts', () => {
  test('probed once and reused until the TTL; then served stale while one probe refreshes them', async () => {
    let probes = 0;
    let t = 0;
    const source = createNodeFacts({ probe: async () => facts(++probes), ttlMs: 1000, now: () => t });
    expect(await source.get()).toEqual(facts(1));
    expect(await source.get()).toEqual(facts(1));
    t = 1500;
    expect(await source.get()).toEqual(facts(1));
    await new Promise((r) => setImmediate(r));
    expect(await source.get()).toEqual(facts(2));
    expect(probes).toBe(2);
  });

  test('a failing probe gives no facts (and no error) and is not retried before the TTL', async () => {
    let probes = 0;
    const source = createNodeFacts({
      probe: async () => {
        probes++;
        throw new Error('no /proc/cpuinfo');
      },
      now: () => 0,
    });
    expect(await source.get()).toBeUndefined();
    expect(await source.get()).toBeUndefined();
    expect(probes).toBe(1);
  });

  test('systeminformation reports this machine', async () => {
    const f = await probeSysteminformation();
    expect(f.cpus).toBeGreaterThan(0);
    expect(f.physicalCores).toBeGreaterThan(0);
    expect(f.memoryBytes).toBeGreaterThan(2 ** 28);
  });
});
