// Shared by the endpoint tests: the SyncFs port over a memfs volume, plain HttpDeps, and a small parser of
// the Prometheus text format (enough to compare series: names, label sets, values, HELP/TYPE lines).
import type { Volume } from 'memfs';
import type { SyncFs } from '../../agent/cgroup-stats.ts';
import type { HttpDeps } from '../../agent/http.ts';
import { createAgentMetrics } from '../../agent/metrics.ts';
import type { CgroupLayout } from '../../cgroup/types.ts';
import type { PodLike } from '../../agent/resize/pod.ts';
import type { PodView } from '../../agent/reconcile/reconciler.ts';

export function memSyncFs(vol: Volume): SyncFs {
  return {
    openSync: (path, flags) => vol.openSync(path, flags),
    readSync: (fd, buffer, offset, length, position) => vol.readSync(fd, buffer, offset, length, position),
    closeSync: (fd) => vol.closeSync(fd),
    readdirSync: (path) =>
      (vol.readdirSync(path, { withFileTypes: true }) as { name: unknown; isDirectory(): boolean }[]).map(
        (d) => ({
          name: String(d.name),
          isDirectory: () => d.isDirectory(),
        }),
      ),
    existsSync: (path) => vol.existsSync(path),
  };
}

export function plainDeps(opts: {
  files: SyncFs;
  layout: CgroupLayout | undefined;
  /** API-shaped pods; the fixtures' loaders type them loosely. */
  pods: readonly object[];
  views?: PodView[];
  synced?: boolean;
  extra?: Partial<HttpDeps>;
}): HttpDeps {
  return {
    nodeName: 'node-a',
    layout: opts.layout,
    files: opts.files,
    pods: () => opts.pods as PodLike[],
    views: () => opts.views ?? [],
    metrics: createAgentMetrics(),
    informer: { synced: opts.synced ?? true, lastEventAt: Date.now() },
    processMetrics: false,
    nodeFacts: {
      get: async () => ({ cpus: 2, physicalCores: 2, memoryBytes: 8 * 2 ** 30, cpuModel: 'Test CPU' }),
    },
    ...opts.extra,
  };
}

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Exposition {
  help: Map<string, string>;
  type: Map<string, string>;
  samples: Sample[];
}

const unescape = (v: string) => v.replace(/\\(["\\n])/g, (_m, c: string) => (c === 'n' ? '\n' : c));

/** Parses the Prometheus text format 0.0.4; throws on a line it cannot read. */
export function parseExposition(text: string): Exposition {
  const out: Exposition = { help: new Map(), type: new Map(), samples: [] };
  for (const line of text.split('\n')) {
    if (line === '') continue;
    let m: RegExpExecArray | null;
    if ((m = /^# HELP (\S+) (.*)$/.exec(line))) out.help.set(m[1]!, m[2]!);
    else if ((m = /^# TYPE (\S+) (\S+)$/.exec(line))) out.type.set(m[1]!, m[2]!);
    else if (line.startsWith('#')) continue;
    else if ((m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: (-?\d+))?$/.exec(line))) {
      const labels: Record<string, string> = {};
      const body = m[2] ?? '';
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?/gy;
      let l: RegExpExecArray | null;
      let consumed = 0;
      while ((l = re.exec(body))) {
        labels[l[1]!] = unescape(l[2]!);
        consumed = re.lastIndex;
      }
      if (consumed !== body.length) throw new Error(`bad labels in line: ${line}`);
      const v = m[3]!;
      const value = v === '+Inf' ? Infinity : v === '-Inf' ? -Infinity : Number(v);
      if (Number.isNaN(value) && v !== 'NaN' && v !== 'Nan') throw new Error(`bad value in line: ${line}`);
      out.samples.push({ name: m[1]!, labels, value });
    } else throw new Error(`unparseable line: ${line}`);
  }
  return out;
}

/** A stable key for a series: name and sorted labels. */
export const seriesKey = (s: { name: string; labels: Record<string, string> }): string =>
  `${s.name}{${Object.keys(s.labels)
    .sort()
    .map((k) => `${k}=${JSON.stringify(s.labels[k])}`)
    .join(',')}}`;
