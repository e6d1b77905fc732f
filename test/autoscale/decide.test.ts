import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decideContainer, newTracker, observe, type Sample } from '../../agent/autoscale/decide.ts';
import { parseAutoscalePolicy, policyFor, type ContainerPolicy } from '../../agent/autoscale/policy.ts';
import type { Resources } from '../../agent/resize/pod.ts';
import { simulate } from './simulate.ts';

const Mi = 1024 * 1024;
const MiB = 1024n * 1024n;

function policy(text: string): ContainerPolicy {
  const r = parseAutoscalePolicy(text);
  if (!r.ok) throw new Error(r.message);
  return policyFor(r.value, 'app')!;
}

const burstable = (cpuReq: number, cpuLim: number, memReq: bigint, memLim: bigint): Resources => ({
  requests: { cpu: cpuReq, memory: memReq },
  limits: { cpu: cpuLim, memory: memLim },
});

const sample = (at: number, over: Partial<Sample> = {}): Sample => ({
  at,
  cpuUsageNs: 0,
  nrPeriods: 0,
  nrThrottled: 0,
  workingSetBytes: 10 * Mi,
  oomKills: 0,
  ...over,
});

describe('CPU scale-up', () => {
  it('doubles a saturated 200m limit after the 2s window, then again after the cooldown, up to max', () => {
    const r = simulate({
      policy: policy('{"cpu":{"max":"800m"}}'),
      start: burstable(100, 200, 64n * MiB, 256n * MiB),
      demand: () => ({ cpuMilli: 1000, workingSet: 20 * Mi }),
      durationMs: 30_000,
      applyDelayMs: 100,
    });
    expect(r.decisions.map((d) => [d.at, d.decision.reason.split(':')[0]])).toEqual([
      [2_000, 'raise cpu limit 200m -> 400m'],
      // the cooldown (5 s) and a fresh window under the new limit (2 s) both run out at 7 s
      [7_000, 'raise cpu limit 400m -> 800m'],
    ]);
    expect(r.decisions[0]!.decision.change).toEqual({ requests: {}, limits: { cpu: 400 } });
    expect(r.decisions[0]!.decision.triggers).toEqual(['cpu-utilization']);
    expect(r.decisions[0]!.decision.reason).toMatch(/cpu at 100% of its 200m limit over 2s \(target 80%\)/);
    // Burstable stays Burstable: the request is left where it was.
    expect(r.final).toEqual(burstable(100, 800, 64n * MiB, 256n * MiB));
  });

  it('stops at 4x the spec limit when the policy sets no max', () => {
    const r = simulate({
      policy: policy('{"cpu":{"cooldown":"0s"}}'),
      start: burstable(100, 200, 64n * MiB, 256n * MiB),
      demand: () => ({ cpuMilli: 4000, workingSet: 20 * Mi }),
      durationMs: 30_000,
    });
    expect(r.final.limits.cpu).toBe(800);
  });

  it('leaves a container below the target alone', () => {
    const r = simulate({
      policy: policy('{}'),
      start: burstable(100, 200, 64n * MiB, 256n * MiB),
      demand: () => ({ cpuMilli: 150, workingSet: 20 * Mi }),
      durationMs: 20_000,
    });
    expect(r.decisions).toEqual([]);
  });

  it('waits for the condition to hold in both halves of the window, not a burst filling part of it', () => {
    // idle until 5 s, then saturating (and throttled in every period)
    const run = (p: string) =>
      simulate({
        policy: policy(p),
        start: burstable(100, 200, 64n * MiB, 256n * MiB),
        demand: (at) => ({ cpuMilli: at <= 5_000 ? 0 : 1000, workingSet: 20 * Mi }),
        durationMs: 10_000,
      }).decisions.map((d) => [d.at, d.decision.triggers]);
    // Utilization: at 6.5 s the first half of the window (4.5-5.5 s) averaged 50 %; at 7 s both halves are
    // at 100 %.
    expect(run('{"cpu":{"max":"400m","throttledRatio":false}}')).toEqual([[7_000, ['cpu-utilization']]]);
    // Throttling counts only periods in which the container ran: at 6.5 s the first half holds 5 of them
    // (the minimum), all throttled, and so does the second.
    expect(run('{"cpu":{"max":"400m"}}')).toEqual([[6_500, ['cpu-throttling']]]);
    // At 6 s the first half had no period at all: nothing.
  });

  it('does not act on a burst that has already ended (the second half of the window must hold too)', () => {
    const t = newTracker('c');
    const p = policy('{"cpu":{"throttledRatio":false}}');
    const holding = burstable(100, 200, 64n * MiB, 256n * MiB);
    // 200m for 2 s, then idle for the last 500 ms: the 2 s average is 75 %+ but nothing is saturated now.
    const usage = [0, 100e6, 200e6, 300e6, 400e6, 400e6];
    usage.forEach((ns, i) => observe(t, sample(i * 500, { cpuUsageNs: ns }), holding, p));
    const now = 2_500;
    expect(
      decideContainer(t, { container: 'app', policy: p, holding, spec: holding, qos: 'Burstable', now })
        .decision,
    ).toBeUndefined();
  });

  it('raises on throttling even when the average is below the target', () => {
    const r = simulate({
      policy: policy('{"cpu":{"max":"400m"}}'),
      start: burstable(100, 200, 64n * MiB, 256n * MiB),
      // 300m and 50m in turn: 62 % of the limit on average, throttled in half of the periods.
      demand: (at) => ({ cpuMilli: (at / 500) % 2 === 0 ? 300 : 50, workingSet: 20 * Mi }),
      durationMs: 10_000,
    });
    expect(r.decisions).toHaveLength(1);
    expect(r.decisions[0]!.decision.triggers).toEqual(['cpu-throttling']);
    expect(r.decisions[0]!.decision.reason).toMatch(
      /throttled in 50% of its periods over 2s \(trigger 25%\)/,
    );
  });

  it('moves request and limit together on a Guaranteed pod', () => {
    const g: Resources = {
      requests: { cpu: 200, memory: 256n * MiB },
      limits: { cpu: 200, memory: 256n * MiB },
    };
    const r = simulate({
      policy: policy('{"cpu":{"max":"400m"}}'),
      start: g,
      qos: 'Guaranteed',
      demand: () => ({ cpuMilli: 1000, workingSet: 20 * Mi }),
      durationMs: 10_000,
    });
    expect(r.final).toEqual({
      requests: { cpu: 400, memory: 256n * MiB },
      limits: { cpu: 400, memory: 256n * MiB },
    });
  });

  it('never scales up a container without a limit (a limit cannot be added in place)', () => {
    const r = simulate({
      policy: policy('{}'),
      start: { requests: { cpu: 100, memory: 64n * MiB }, limits: {} },
      demand: () => ({ cpuMilli: 2000, workingSet: 500 * Mi }),
      durationMs: 10_000,
    });
    expect(r.decisions).toEqual([]);
  });

  it('restarts the window after any change of the resources (a manual resize included)', () => {
    const t = newTracker('c');
    const p = policy('{"cpu":{"throttledRatio":false}}');
    const before = burstable(100, 200, 64n * MiB, 256n * MiB);
    const after = burstable(100, 300, 64n * MiB, 256n * MiB);
    for (let i = 0; i <= 4; i++) observe(t, sample(i * 500, { cpuUsageNs: i * 100e6 }), before, p);
    // The user resized to 300m; the process keeps saturating it.
    for (let i = 5; i <= 8; i++)
      observe(t, sample(i * 500, { cpuUsageNs: 400e6 + (i - 4) * 150e6 }), after, p);
    const at = (now: number) =>
      decideContainer(t, {
        container: 'app',
        policy: p,
        holding: after,
        spec: before,
        qos: 'Burstable',
        now,
      });
    expect(at(4_000).decision).toBeUndefined();
    observe(t, sample(4_500, { cpuUsageNs: 400e6 + 5 * 150e6 }), after, p);
    expect(at(4_500).decision?.change.limits.cpu).toBe(600);
  });
});

describe('memory scale-up', () => {
  it('raises the limit when the working set reaches the watermark', () => {
    const t = newTracker('c');
    const p = policy('{"memory":{"max":"1Gi"}}');
    const holding = burstable(100, 200, 64n * MiB, 256n * MiB);
    observe(t, sample(0, { workingSetBytes: 231 * Mi }), holding, p);
    const r = decideContainer(t, {
      container: 'app',
      policy: p,
      holding,
      spec: holding,
      qos: 'Burstable',
      now: 0,
    });
    expect(r.decision?.change).toEqual({ requests: {}, limits: { memory: 512n * MiB } });
    expect(r.decision?.reason).toMatch(
      /raise memory limit 256Mi -> 512Mi: working set 231Mi is 90% of the 256Mi memory limit \(watermark 90%\)/,
    );
  });

  it('raises far enough for a working set already above the watermark of the doubled limit', () => {
    const t = newTracker('c');
    const p = policy('{"memory":{"max":"4Gi"}}');
    const holding = burstable(100, 200, 64n * MiB, 256n * MiB);
    observe(t, sample(0, { workingSetBytes: 500 * Mi }), holding, p);
    const r = decideContainer(t, {
      container: 'app',
      policy: p,
      holding,
      spec: holding,
      qos: 'Burstable',
      now: 0,
    });
    // 500Mi / 0.9 * 1.05 = 583.3Mi, rounded up to whole MiB
    expect(r.decision?.change.limits.memory).toBe(584n * MiB);
  });

  it('stays ahead of a working set growing 8 MiB/s: no OOM kill, limit raised in time', () => {
    const r = simulate({
      policy: policy('{"memory":{"max":"1Gi"}}'),
      start: burstable(100, 200, 64n * MiB, 256n * MiB),
      demand: (at) => ({ cpuMilli: 10, workingSet: Math.min(700, 100 + (8 * at) / 1000) * Mi }),
      durationMs: 90_000,
      applyDelayMs: 1_000,
    });
    expect(r.oomKills).toBe(0);
    expect(r.decisions.map((d) => d.decision.change.limits.memory)).toEqual([512n * MiB, 1024n * MiB]);
  });

  it('an OOM kill raises the limit at once, cooldown or not, bounded by max', () => {
    const t = newTracker('c');
    const p = policy('{"memory":{"max":"384Mi","cooldown":"1h"}}');
    const holding = burstable(100, 200, 64n * MiB, 256n * MiB);
    observe(t, sample(0, { oomKills: 3 }), holding, p);
    t.lastUp.memory = 0;
    observe(t, sample(500, { oomKills: 4 }), holding, p);
    const r = decideContainer(t, {
      container: 'app',
      policy: p,
      holding,
      spec: holding,
      qos: 'Burstable',
      now: 500,
    });
    expect(r.decision?.triggers).toEqual(['oom-kill']);
    expect(r.decision?.change.limits.memory).toBe(384n * MiB);
  });

  it('an OOM kill at the max is reported as capped and not kept pending', () => {
    const t = newTracker('c');
    const p = policy('{"memory":{"max":"256Mi"}}');
    const holding = burstable(100, 200, 64n * MiB, 256n * MiB);
    observe(t, sample(0, { oomKills: 0 }), holding, p);
    observe(t, sample(500, { oomKills: 1 }), holding, p);
    const r = decideContainer(t, {
      container: 'app',
      policy: p,
      holding,
      spec: holding,
      qos: 'Burstable',
      now: 500,
    });
    expect(r.decision).toBeUndefined();
    expect(r.capped).toMatch(/memory limit 256Mi is at its max 256Mi/);
    expect(t.oomPending).toBe(false);
  });

  it('OOM kills that happened before the autoscaler first looked do not count', () => {
    const t = newTracker('c');
    const p = policy('{}');
    const holding = burstable(100, 200, 64n * MiB, 256n * MiB);
    observe(t, sample(0, { oomKills: 7 }), holding, p);
    const r = decideContainer(t, {
      container: 'app',
      policy: p,
      holding,
      spec: holding,
      qos: 'Burstable',
      now: 0,
    });
    expect(r.decision).toBeUndefined();
  });

  it('CPU and memory triggers firing together become one decision', () => {
    const r = simulate({
      policy: policy('{"cpu":{"max":"400m"},"memory":{"max":"512Mi"}}'),
      start: burstable(100, 200, 64n * MiB, 256n * MiB),
      demand: (at) => ({ cpuMilli: 1000, workingSet: (at < 2_000 ? 100 : 240) * Mi }),
      durationMs: 4_000,
    });
    expect(r.decisions).toHaveLength(1);
    expect(r.decisions[0]!.decision.change).toEqual({
      requests: {},
      limits: { cpu: 400, memory: 512n * MiB },
    });
  });
});

describe('scale-down', () => {
  const quiet = '{"cpu":{"min":"50m"},"memory":{"min":"64Mi"},"scaleDown":{"quietWindow":"3s"}}';

  it("lowers an idle container's requests once after the quiet window, then stays put", () => {
    const r = simulate({
      policy: policy(quiet),
      start: burstable(500, 1000, 256n * MiB, 512n * MiB),
      demand: () => ({ cpuMilli: 2, workingSet: 30 * Mi }),
      durationMs: 120_000,
      applyDelayMs: 200,
    });
    expect(r.decisions).toHaveLength(1);
    const d = r.decisions[0]!;
    expect(d.at).toBe(3_000);
    expect(d.decision.direction).toBe('down');
    expect(d.decision.change).toEqual({ requests: { cpu: 50, memory: 64n * MiB }, limits: {} });
    expect(d.decision.reason).toMatch(
      /^lower cpu request 500m -> 50m, memory request 256Mi -> 64Mi: quiet for 3s/,
    );
    expect(r.final.limits).toEqual({ cpu: 1000, memory: 512n * MiB });
  });

  it('never goes below current use plus the margin', () => {
    const r = simulate({
      policy: policy(quiet),
      start: burstable(1000, 2000, 256n * MiB, 512n * MiB),
      demand: () => ({ cpuMilli: 400, workingSet: 100 * Mi }),
      durationMs: 10_000,
    });
    // 400m x 1.15 = 460m; 100Mi x 1.15 = 115Mi
    expect(r.final.requests).toEqual({ cpu: 460, memory: 115n * MiB });
  });

  it('does nothing when the change would be smaller than the hysteresis', () => {
    const r = simulate({
      policy: policy(quiet),
      start: burstable(500, 1000, 128n * MiB, 512n * MiB),
      // 430m x 1.15 = 495m: 1 % below 500m; 100Mi x 1.15 = 115Mi: 10 % below 128Mi
      demand: () => ({ cpuMilli: 430, workingSet: 100 * Mi }),
      durationMs: 30_000,
    });
    expect(r.decisions).toEqual([]);
  });

  it('lowers limits only when the policy says so, keeping use below the scale-up trigger', () => {
    const r = simulate({
      policy: policy(
        '{"cpu":{"min":"50m"},"memory":{"min":"64Mi"},"scaleDown":{"quietWindow":"3s","limits":true}}',
      ),
      start: burstable(500, 2000, 256n * MiB, 1024n * MiB),
      demand: () => ({ cpuMilli: 200, workingSet: 100 * Mi }),
      durationMs: 60_000,
    });
    expect(r.decisions).toHaveLength(1);
    // cpu: request 200 x 1.15 = 230m; limit 230 / 0.8 = 288m (use stays at 69 % of it, under 80 %)
    // memory: request 115Mi; limit 115Mi / 0.9 = 128Mi
    expect(r.final).toEqual(burstable(230, 288, 115n * MiB, 128n * MiB));
  });

  it('leaves a Guaranteed pod alone unless limits may be lowered, then moves both', () => {
    const g: Resources = {
      requests: { cpu: 1000, memory: 512n * MiB },
      limits: { cpu: 1000, memory: 512n * MiB },
    };
    const idle = () => ({ cpuMilli: 10, workingSet: 50 * Mi });
    expect(
      simulate({ policy: policy(quiet), start: g, qos: 'Guaranteed', demand: idle, durationMs: 20_000 })
        .decisions,
    ).toEqual([]);
    const r = simulate({
      policy: policy(
        '{"cpu":{"min":"100m"},"memory":{"min":"64Mi"},"scaleDown":{"quietWindow":"3s","limits":true}}',
      ),
      start: g,
      qos: 'Guaranteed',
      demand: idle,
      durationMs: 20_000,
    });
    expect(r.final).toEqual({
      requests: { cpu: 100, memory: 64n * MiB },
      limits: { cpu: 100, memory: 64n * MiB },
    });
  });

  it("keeps 100m for a container whose spec has no CPU request (the validator's floor)", () => {
    const start: Resources = { requests: { cpu: 500 }, limits: {} };
    const r = simulate({
      policy: policy('{"cpu":{"min":"10m"},"memory":false,"scaleDown":{"quietWindow":"3s"}}'),
      start,
      spec: { requests: {}, limits: {} },
      demand: () => ({ cpuMilli: 1, workingSet: 0 }),
      durationMs: 10_000,
    });
    expect(r.final.requests.cpu).toBe(100);
  });
});

describe('no flapping', () => {
  it('a burst followed by quiet: raise, then one correction down, then nothing', () => {
    const r = simulate({
      policy: policy(
        '{"cpu":{"max":"2","min":"50m"},"memory":{"min":"64Mi"},"scaleDown":{"quietWindow":"5s","limits":true}}',
      ),
      start: burstable(100, 200, 64n * MiB, 256n * MiB),
      demand: (at) => ({ cpuMilli: at < 20_000 ? 700 : 100, workingSet: 40 * Mi }),
      durationMs: 120_000,
    });
    expect(r.flaps).toBe(0);
    const last = r.decisions[r.decisions.length - 1]!;
    expect(last.at).toBeLessThan(40_000);
  });

  it('property: steady demand with noise never flaps, never OOMs, and settles in a few steps', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 5, max: 3000 }),
        fc.integer({ min: 20, max: 800 }),
        fc.integer({ min: 100, max: 1000 }),
        fc.boolean(),
        fc.integer({ min: 1, max: 1_000_000 }),
        (cpuMilli, wsMi, limitMilli, limits, seed) => {
          let x = seed;
          const noise = () => {
            x = (x * 1103515245 + 12345) % 2 ** 31;
            return 0.9 + (x / 2 ** 31) * 0.2; // ±10 %
          };
          const r = simulate({
            policy: policy(
              `{"cpu":{"max":"8","min":"10m"},"memory":{"max":"4Gi","min":"16Mi"},"scaleDown":{"quietWindow":"5s","limits":${limits}}}`,
            ),
            start: burstable(Math.max(10, limitMilli / 2), limitMilli, 64n * MiB, 1024n * MiB),
            demand: () => ({ cpuMilli: cpuMilli * noise(), workingSet: wsMi * noise() * Mi }),
            durationMs: 150_000,
            applyDelayMs: 300,
          });
          expect(r.flaps).toBe(0);
          expect(r.oomKills).toBe(0);
          // A demand that hovers just under the CPU target can cross it on a noisy 2 s window now and
          // then, and each crossing is a legitimate raise; but raises only go up (to max) and the
          // scale-down happens once, so the number of steps stays small.
          const ups = r.decisions.filter((d) => d.decision.direction === 'up').length;
          expect(ups).toBeLessThanOrEqual(Math.ceil(Math.log2(8000 / limitMilli)));
          // each of cpu/memory request/limit is lowered at most once
          expect(r.decisions.length - ups).toBeLessThanOrEqual(4);
        },
      ),
      { numRuns: 150 },
    );
  });
});
