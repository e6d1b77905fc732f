// The exposition of the container_* families, written straight into one buffer: every value must print
// exactly as JavaScript (and prom-client) prints it, labels escaped, families grouped, the trailer last.
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import { CADVISOR_FAMILIES, createCadvisorRenderer } from '../../agent/cadvisor/render.ts';
import type { CadvisorLabels, NodeScan, ScannedCgroup } from '../../agent/cadvisor/targets.ts';
import type { CgroupStats } from '../../agent/cgroup-stats.ts';
import { parseExposition } from './helpers.ts';

const stats = (over: Partial<CgroupStats> = {}): CgroupStats => ({
  cpuUsageNs: 1_500_000_000,
  cpuQuotaUs: 20_000,
  cpuPeriodUs: 100_000,
  cpuShares: 102,
  cfs: { periods: 10, throttledPeriods: 3, throttledNs: 250_000_000 },
  memoryUsageBytes: 4096,
  workingSetBytes: 1024,
  inactiveFileBytes: 3072,
  rssBytes: 512,
  memoryLimitBytes: 134_217_728,
  oomKills: 0,
  ...over,
});

const labels = (over: Partial<CadvisorLabels> = {}): CadvisorLabels => ({
  container: 'app',
  id: '/kubepods/burstable/pod1/abc',
  image: 'registry.example/app:1.0',
  name: 'abc',
  namespace: 'shop',
  pod: 'web',
  ...over,
});

const scanOf = (cgroups: { labels: CadvisorLabels; stats: CgroupStats }[], problems = 0): NodeScan => ({
  cgroups: cgroups.map((c): ScannedCgroup => ({
    path: c.labels.id.slice(1),
    level: 'container',
    labels: c.labels,
    stats: c.stats,
  })),
  problems: Array.from({ length: problems }, () => ({ path: '/x', code: 'E', message: 'm' })),
  durationMs: 1,
});

/** The line a family prints for one cgroup, built the slow and obvious way. */
function expectedLine(
  f: (typeof CADVISOR_FAMILIES)[number],
  l: CadvisorLabels,
  s: CgroupStats,
): string | null {
  const v = f.value(s);
  if (v === undefined) return null;
  const esc = (x: string) => x.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
  const body = (['container', 'id', 'image', 'name', 'namespace', 'pod'] as const)
    .map((k) => `${k}="${esc(l[k])}"`)
    .join(',');
  return `${f.name}{${f.prefix ?? ''}${body}} ${String(v)}`;
}

describe('the container_* exposition', () => {
  test('values print as String(value) would: integers of any size, seconds with fractions', () => {
    const render = createCadvisorRenderer();
    const counter = fc.oneof(
      fc.constantFrom(0, 1, 9, 10, 99, 100, 101, Number.MAX_SAFE_INTEGER),
      fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
      fc.integer({ min: 0, max: 10_000 }),
    );
    fc.assert(
      fc.property(counter, counter, counter, fc.integer({ min: -1, max: 2 ** 40 }), (a, b, c, quota) => {
        const s = stats({
          cpuUsageNs: a,
          memoryUsageBytes: b,
          workingSetBytes: c,
          rssBytes: a,
          oomKills: c,
          cpuShares: b,
          cpuQuotaUs: quota < 0 ? null : quota,
          cfs: quota < 0 ? null : { periods: a, throttledPeriods: c, throttledNs: b },
        });
        const text = render.render(scanOf([{ labels: labels(), stats: s }])).bytes.toString('utf8');
        for (const f of CADVISOR_FAMILIES) {
          const line = expectedLine(f, labels(), s);
          const found = text.split('\n').filter((l) => l.startsWith(`${f.name}{`));
          expect(found).toEqual(line === null ? [] : [line]);
        }
      }),
      { numRuns: 300 },
    );
  });

  test('families are grouped under one HELP/TYPE each, labels escaped, scrape error and trailer last', () => {
    const render = createCadvisorRenderer();
    const odd = labels({ id: '/kubepods/pod2/def', image: 'weird"image\\with\nnewline', container: 'x' });
    const scan = scanOf(
      [
        { labels: labels(), stats: stats() },
        { labels: odd, stats: stats({ cpuQuotaUs: null, cfs: null, cpuUsageNs: 0 }) },
      ],
      1,
    );
    const text = render
      .render(scan, '\n# HELP other_metric x\n# TYPE other_metric gauge\nother_metric 7\n')
      .bytes.toString();
    const m = parseExposition(text);
    expect(m.samples.find((s) => s.labels.container === 'x')?.labels.image).toBe(
      'weird"image\\with\nnewline',
    );
    // CFS and usage series only where cAdvisor has them: the quota-less cgroup with 0 usage has none.
    const names = (c: string) => m.samples.filter((s) => s.labels.container === c).map((s) => s.name);
    expect(names('app')).toEqual(CADVISOR_FAMILIES.map((f) => f.name));
    expect(names('x')).not.toContain('container_cpu_cfs_periods_total');
    expect(names('x')).not.toContain('container_cpu_usage_seconds_total');
    // Each family's samples are contiguous, after its own TYPE line.
    const lines = text.split('\n');
    for (const f of CADVISOR_FAMILIES) {
      const at = lines.flatMap((l, i) => (l.startsWith(`${f.name}{`) ? [i] : []));
      expect(lines[at[0]! - 1]).toBe(`# TYPE ${f.name} ${f.type}`);
      expect(at[at.length - 1]! - at[0]!).toBe(at.length - 1);
    }
    expect(m.samples.find((s) => s.name === 'container_scrape_error')?.value).toBe(1);
    expect(text.endsWith('other_metric 7\n')).toBe(true);
  });

  test('an empty node renders the scrape error alone', () => {
    const text = createCadvisorRenderer().render(scanOf([])).bytes.toString();
    expect(parseExposition(text).samples).toEqual([{ name: 'container_scrape_error', labels: {}, value: 0 }]);
  });

  test('a buffer is reused only once given back: a scrape still being sent is never overwritten', () => {
    const render = createCadvisorRenderer();
    const a = scanOf([{ labels: labels(), stats: stats({ memoryUsageBytes: 111 }) }]);
    const b = scanOf([{ labels: labels(), stats: stats({ memoryUsageBytes: 222 }) }]);
    const first = render.render(a);
    const firstText = first.bytes.toString();
    // Not released (still being compressed or written): the next render must use other memory.
    const second = render.render(b);
    expect(second.bytes.buffer).not.toBe(first.bytes.buffer);
    expect(first.bytes.toString()).toBe(firstText);
    first.release();
    first.release(); // twice is harmless
    const third = render.render(b);
    expect(third.bytes.buffer).toBe(first.bytes.buffer);
    const secondText = second.bytes.toString();
    expect(third.bytes.toString()).toBe(secondText);
    // Released while the third holds it: the fourth gets the second's buffer, not the third's.
    second.release();
    const fourth = render.render(a);
    expect(fourth.bytes.buffer).toBe(second.bytes.buffer);
    expect(third.bytes.toString()).toBe(secondText);
    expect(fourth.bytes.toString()).toBe(firstText);
  });
});
