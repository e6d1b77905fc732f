// The container_* families in the Prometheus text format, rendered here rather than through prom-client.
// prom-client can express them (custom get() values with shared label objects were tried first), but at
// ~12k series per scrape on a 500-container node its per-series formatting (label object walks, escaping,
// string joins) cost ~60 ms a scrape on the 2-core bench machine, over twice the whole scrape budget, and
// built the ~3 MB text as one string. Here each cgroup's label text is escaped and encoded once and reused
// across scrapes, and lines are copied into one buffer per scrape (see CadvisorRenderer). Everything else on
// /metrics (resizelet_*, process, engine counters) stays on the app's prom-client registry.
//
// `container_cpu_usage_seconds_total` carries `cpu="total"` (the kubelet disables per-CPU usage) and, like
// cAdvisor, is absent while the usage is 0. The CFS series and `container_spec_cpu_quota` exist only when
// a quota is set. An unlimited memory limit reads 0. Values carry no timestamps (cAdvisor stamps them with
// its last housekeeping time; ours are read during the scrape, so the scrape's own time is the truth).
import type { CgroupStats } from '../cgroup-stats.ts';
import type { CadvisorLabels, NodeScan } from './targets.ts';

interface Family {
  name: string;
  help: string;
  type: 'gauge' | 'counter';
  /** Extra labels before the cgroup's, e.g. `cpu="total",`. */
  prefix?: string;
  /** undefined = no series for this cgroup (cAdvisor's conditions). */
  value(s: CgroupStats): number | undefined;
}

/** HELP texts and types exactly as the kubelet's cAdvisor (v0.47+) prints them. */
export const CADVISOR_FAMILIES: readonly Family[] = [
  {
    name: 'container_cpu_usage_seconds_total',
    help: 'Cumulative cpu time consumed in seconds.',
    type: 'counter',
    prefix: 'cpu="total",',
    value: (s) => (s.cpuUsageNs > 0 ? s.cpuUsageNs / 1e9 : undefined),
  },
  {
    name: 'container_cpu_cfs_periods_total',
    help: 'Number of elapsed enforcement period intervals.',
    type: 'counter',
    value: (s) => s.cfs?.periods,
  },
  {
    name: 'container_cpu_cfs_throttled_periods_total',
    help: 'Number of throttled period intervals.',
    type: 'counter',
    value: (s) => s.cfs?.throttledPeriods,
  },
  {
    name: 'container_cpu_cfs_throttled_seconds_total',
    help: 'Total time duration the container has been throttled.',
    type: 'counter',
    value: (s) => (s.cfs ? s.cfs.throttledNs / 1e9 : undefined),
  },
  {
    name: 'container_spec_cpu_quota',
    help: 'CPU quota of the container.',
    type: 'gauge',
    value: (s) => s.cpuQuotaUs ?? undefined,
  },
  {
    name: 'container_spec_cpu_period',
    help: 'CPU period of the container.',
    type: 'gauge',
    value: (s) => s.cpuPeriodUs,
  },
  {
    name: 'container_spec_cpu_shares',
    help: 'CPU share of the container.',
    type: 'gauge',
    value: (s) => s.cpuShares,
  },
  {
    name: 'container_memory_usage_bytes',
    help: 'Current memory usage in bytes, including all memory regardless of when it was accessed',
    type: 'gauge',
    value: (s) => s.memoryUsageBytes,
  },
  {
    name: 'container_memory_working_set_bytes',
    help: 'Current working set in bytes.',
    type: 'gauge',
    value: (s) => s.workingSetBytes,
  },
  { name: 'container_memory_rss', help: 'Size of RSS in bytes.', type: 'gauge', value: (s) => s.rssBytes },
  {
    name: 'container_spec_memory_limit_bytes',
    help: 'Memory limit for the container.',
    type: 'gauge',
    value: (s) => s.memoryLimitBytes ?? 0,
  },
  {
    name: 'container_oom_events_total',
    help: 'Count of out of memory events observed for the container',
    type: 'counter',
    value: (s) => s.oomKills,
  },
];

/** Label values may hold anything a pod object does (image references are user input). */
const escapeLabel = (v: string) => v.replace(/[\\"\n]/g, (c) => (c === '\n' ? '\\n' : `\\${c}`));

/** A rendered exposition and the buffer it lives in, lent until `release()`. */
export interface Rendered {
  bytes: Buffer;
  /**
   * Gives the buffer back for the next render: call it once nothing reads `bytes` any more (compression
   * done, response flushed to the socket). Never calling it is safe: the buffer is then garbage.
   */
  release(): void;
}

export interface CadvisorRenderer {
  /**
   * The container_* families and `container_scrape_error` in the Prometheus text format, followed by
   * `trailer` (the registry's families), written once into one buffer. Lines are copied from label bytes
   * encoded once per cgroup and integers are written digit by digit: ~12k lines take ~2 ms, one event-loop
   * turn, and allocate almost nothing. The buffer (~3 MB on a busy node) is reused from one scrape to the
   * next while it is free: V8 counts Buffer memory towards its heap limits, and a fresh 3 MB per scrape made
   * it run a full mark-compact every second scrape (10-20 ms pauses on the 2-core bench machine). A
   * concurrent scrape gets a buffer of its own. Not a string: a ~3 MB string lives in V8's large-object
   * space until a full GC.
   */
  render(scan: NodeScan, trailer?: string): Rendered;
}

/** " <number>\n" never needs more (a double's shortest form is at most 24 characters). */
const LINE_MAX_VALUE = 32;
const SPACE_BYTE = 0x20;
const NEWLINE_BYTE = 0x0a;
const ZERO_BYTE = 0x30;

/** Writes a non-negative safe integer's decimal digits at `off`; returns the new offset. */
function writeUint(buf: Buffer, off: number, v: number): number {
  if (v < 10) {
    buf[off] = ZERO_BYTE + v;
    return off + 1;
  }
  let digits = 0;
  for (let x = v; x >= 1; x = Math.floor(x / 10)) digits++;
  let x = v;
  for (let i = off + digits - 1; i >= off; i--) {
    buf[i] = ZERO_BYTE + (x % 10);
    x = Math.floor(x / 10);
  }
  return off + digits;
}

export function createCadvisorRenderer(): CadvisorRenderer {
  // Each label object's text as bytes, encoded once: the walk hands the same object for a cgroup until it
  // lists the pod again, and an entry goes with its object.
  const cache = new WeakMap<CadvisorLabels, Buffer>();
  const labelBytes = (l: CadvisorLabels): Buffer => {
    let bytes = cache.get(l);
    if (!bytes) {
      const text =
        `container="${escapeLabel(l.container)}",id="${escapeLabel(l.id)}",image="${escapeLabel(l.image)}",` +
        `name="${escapeLabel(l.name)}",namespace="${escapeLabel(l.namespace)}",pod="${escapeLabel(l.pod)}"}`;
      bytes = Buffer.from(text, 'utf8');
      cache.set(l, bytes);
    }
    return bytes;
  };
  /** The buffer free for the next render. */
  let spare: Buffer | undefined;
  const families = CADVISOR_FAMILIES.map((f) => ({
    ...f,
    header: Buffer.from(`# HELP ${f.name} ${f.help}\n# TYPE ${f.name} ${f.type}\n`),
    head: Buffer.from(`${f.name}{${f.prefix ?? ''}`),
  }));

  return {
    render(scan, trailer = '') {
      const labels = scan.cgroups.map((c) => labelBytes(c.labels));
      const tail = Buffer.from(
        '# HELP container_scrape_error 1 if there was an error while getting container metrics, 0 otherwise\n' +
          `# TYPE container_scrape_error gauge\ncontainer_scrape_error ${scan.problems.length > 0 ? 1 : 0}\n` +
          trailer,
      );
      // An upper bound of the size, so the text is written once into one allocation.
      let labelTotal = 0;
      for (const l of labels) labelTotal += l.length;
      let size = tail.length;
      for (const f of families) {
        size += f.header.length + (f.head.length + LINE_MAX_VALUE) * labels.length + labelTotal;
      }
      let out: Buffer;
      if (spare && spare.length >= size) {
        out = spare;
        spare = undefined;
      } else {
        // Room to grow by a quarter (pods come and go) before the next allocation.
        out = Buffer.allocUnsafe(Math.ceil(size * 1.25));
      }
      let off = 0;
      for (const f of families) {
        off += f.header.copy(out, off);
        for (let i = 0; i < scan.cgroups.length; i++) {
          const v = f.value(scan.cgroups[i]!.stats);
          if (v === undefined) continue;
          off += f.head.copy(out, off);
          off += labels[i]!.copy(out, off);
          out[off++] = SPACE_BYTE;
          // Counters and kernel values are integers but for the seconds: those take JavaScript's shortest
          // round-trip form, as prom-client and Go's strconv print them.
          off =
            Number.isSafeInteger(v) && v >= 0
              ? writeUint(out, off, v)
              : off + out.write(String(v), off, 'latin1');
          out[off++] = NEWLINE_BYTE;
        }
      }
      off += tail.copy(out, off);
      let lent = true;
      return {
        bytes: out.subarray(0, off),
        release: () => {
          if (!lent) return;
          lent = false;
          if (!spare || spare.length < out.length) spare = out;
        },
      };
    },
  };
}
