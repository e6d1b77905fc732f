import { describe, expect, it } from 'vitest';
import { admit, type RequestTotals } from '../../agent/resize/admission.ts';

const Mi = 1024n * 1024n;
const t = (cpuMilli: number, mi: number): RequestTotals => ({ cpuMilli, memoryBytes: BigInt(mi) * Mi });

describe('admit', () => {
  const allocatable = t(2000, 4096);
  it('fits when the node has room', () => {
    expect(
      admit({ allocatable, others: [t(500, 1024)], before: t(500, 512), after: t(1000, 1024) }).verdict,
    ).toBe('fits');
  });
  it('rejects what can never fit the node', () => {
    const a = admit({ allocatable, others: [], before: t(500, 512), after: t(2500, 512) });
    expect(a).toEqual({
      verdict: 'never',
      message: "CPU requests 2500m exceed the node's allocatable 2000m",
    });
    const m = admit({ allocatable, others: [], before: t(500, 512), after: t(500, 8192) });
    expect(m.verdict).toBe('never');
  });
  it('defers what does not fit now', () => {
    const a = admit({ allocatable, others: [t(1500, 1024)], before: t(200, 512), after: t(600, 512) });
    expect(a).toEqual({
      verdict: 'not-now',
      message: 'not enough free CPU on the node: asked 600m, 500m free of 2000m',
    });
    const m = admit({ allocatable, others: [t(100, 3800)], before: t(100, 100), after: t(100, 400) });
    expect(m.verdict).toBe('not-now');
    if (m.verdict === 'not-now')
      expect(m.message).toMatch(/not enough free memory.*asked 400Mi, 296Mi free of 4096Mi/);
  });
  it('a shrink always fits, even on an overcommitted node', () => {
    expect(
      admit({ allocatable, others: [t(3000, 9000)], before: t(500, 512), after: t(400, 512) }).verdict,
    ).toBe('fits');
  });
});
