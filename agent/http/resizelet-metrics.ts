// The resizelet_* families of /metrics: what resizelet allocated next to the spec, resize statuses, the
// informer's health, the last cgroup walk, and the node's hardware. Every value is computed when the
// registry renders (STYLE habit 7), from the getters the app hands over.
import { Counter, Gauge, type Registry } from 'prom-client';
import type { NodeScan } from '../cadvisor/targets.ts';
import type { NodeFacts, NodeFactsSource } from '../node-facts.ts';
import { podKey, specResources, type Resources } from '../resize/pod.ts';
import type { HttpDeps } from './deps.ts';

/** The last full walk, as its resizelet_scrape_* series report it. */
export interface WalkSummary {
  cgroups: number;
  durationMs: number;
  problems: NodeScan['problems'];
}

interface ScrapeValue {
  value: number;
  labels: Record<string, string | number>;
}

/**
 * Registers a family whose values are computed when the registry renders (STYLE habit 7). It overrides
 * `get()` rather than calling `set()` from `collect()`, so series that vanish (a deleted pod) vanish from
 * the next scrape without a reset, and nothing is hashed per series.
 */
function registerScrapeMetric(
  registry: Registry,
  def: { name: string; help: string; type: 'gauge' | 'counter' },
  values: () => ScrapeValue[] | Promise<ScrapeValue[]>,
): void {
  const config = { name: def.name, help: def.help, registers: [] };
  const metric = def.type === 'counter' ? new Counter(config) : new Gauge(config);
  const get = async () => ({ ...def, aggregator: 'sum' as const, values: await values() });
  // The registry only calls get(); the declared return type spells `type` with prom-client's MetricType
  // enum, whose runtime values are these very strings.
  metric.get = get as unknown as typeof metric.get;
  registry.registerMetric(metric);
}

const RESOURCES = [
  {
    resource: 'cpu',
    unit: 'core',
    of: (v: Resources['requests']) => (v.cpu === undefined ? undefined : v.cpu / 1000),
  },
  {
    resource: 'memory',
    unit: 'byte',
    of: (v: Resources['requests']) => (v.memory === undefined ? undefined : Number(v.memory)),
  },
] as const;

/** One value per set request/limit of each container: the series of resizelet_container_*_resource. */
function resourceValues(
  namespace: string,
  pod: string,
  containers: { name: string; resources: Resources }[],
): ScrapeValue[] {
  const out: ScrapeValue[] = [];
  for (const c of containers) {
    for (const type of ['request', 'limit'] as const) {
      const side = type === 'request' ? c.resources.requests : c.resources.limits;
      for (const r of RESOURCES) {
        const value = r.of(side);
        if (value !== undefined) {
          out.push({
            value,
            labels: { namespace, pod, container: c.name, resource: r.resource, unit: r.unit, type },
          });
        }
      }
    }
  }
  return out;
}

export function registerResizeletMetrics(
  registry: Registry,
  deps: HttpDeps,
  sources: {
    /** The last cgroup walk's summary (undefined before the first). */
    latest: () => WalkSummary | undefined;
    facts: NodeFactsSource;
    /** Cgroup file descriptors the stats reader keeps open. */
    openFiles: () => number;
  },
): void {
  const { latest, facts, openFiles } = sources;
  const now = deps.now ?? Date.now;
  const scrape = (
    name: string,
    help: string,
    type: 'gauge' | 'counter',
    values: () => ScrapeValue[] | Promise<ScrapeValue[]>,
  ) => registerScrapeMetric(registry, { name, help, type }, values);

  // Both sides only for pods resizelet has allocated: elsewhere the cgroups follow the spec, which
  // kube-state-metrics already exports, and 4 series per container would double the node's cardinality.
  const allocatedPods = () => {
    const byKey = new Map(deps.pods().map((p) => [podKey(p), p]));
    return deps.views().flatMap((v) => {
      const pod = byKey.get(v.key);
      return v.allocation && pod ? [{ view: v, allocation: v.allocation, pod }] : [];
    });
  };
  scrape(
    'resizelet_container_spec_resource',
    'Requests and limits in the pod spec, per container of the pods resizelet has allocated (cores, bytes).',
    'gauge',
    () =>
      allocatedPods().flatMap(({ pod }) => {
        try {
          const containers = (pod.spec?.containers ?? []).map((c) => ({
            name: c.name,
            resources: specResources(c),
          }));
          return resourceValues(pod.metadata?.namespace ?? '', pod.metadata?.name ?? '', containers);
        } catch {
          return []; // a quantity the API server would have refused: nothing to compare
        }
      }),
  );
  scrape(
    'resizelet_container_allocated_resource',
    'Requests and limits resizelet has allocated and enforces in the cgroups, per container (cores, bytes).',
    'gauge',
    () =>
      allocatedPods().flatMap(({ view, allocation }) => {
        const [namespace, pod] = splitKey(view.key);
        return resourceValues(namespace, pod, allocation);
      }),
  );
  scrape(
    'resizelet_pod_resize_status',
    'The resize status of each pod resizelet has answered (1 for the current status).',
    'gauge',
    () =>
      deps.views().flatMap((v) => {
        if (!v.status) return [];
        const [namespace, pod] = splitKey(v.key);
        return [{ value: 1, labels: { namespace, pod, status: v.status.resizeStatus } }];
      }),
  );
  scrape(
    'resizelet_informer_synced',
    "1 once the pod informer has listed the node's pods, 0 before.",
    'gauge',
    () => [{ value: deps.informer.synced ? 1 : 0, labels: {} }],
  );
  scrape(
    'resizelet_informer_last_event_age_seconds',
    'Seconds since the pod watch last delivered anything (events, bookmarks, relists); a watch quiet for too long is restarted.',
    'gauge',
    () => [{ value: Math.max(0, (now() - deps.informer.lastEventAt) / 1000), labels: {} }],
  );
  const last = (pick: (s: WalkSummary) => number) => () => {
    const s = latest();
    return s ? [{ value: pick(s), labels: {} }] : [];
  };
  scrape(
    'resizelet_scrape_cgroups',
    'Cgroups read by the last walk of the node (pods, sandboxes, containers, QoS levels).',
    'gauge',
    last((s) => s.cgroups),
  );
  scrape(
    'resizelet_scrape_cgroup_read_seconds',
    'Time the last walk of the node spent reading cgroups.',
    'gauge',
    last((s) => s.durationMs / 1000),
  );
  scrape(
    'resizelet_scrape_problems',
    'Cgroups or pods the last walk could not read, by error code.',
    'gauge',
    () => {
      const byCode = new Map<string, number>();
      for (const p of latest()?.problems ?? []) byCode.set(p.code, (byCode.get(p.code) ?? 0) + 1);
      return [...byCode].map(([code, value]) => ({ value, labels: { code } }));
    },
  );
  scrape('resizelet_scrape_open_files', 'cgroup file descriptors kept open between scrapes.', 'gauge', () => [
    { value: openFiles(), labels: {} },
  ]);
  const fact = (name: string, help: string, pick: (f: NodeFacts) => number) =>
    scrape(name, help, 'gauge', async () => {
      const f = await facts.get();
      return f ? [{ value: pick(f), labels: {} }] : [];
    });
  fact('resizelet_node_cpus', 'Logical CPUs of the node (systeminformation).', (f) => f.cpus);
  fact(
    'resizelet_node_physical_cores',
    'Physical CPU cores of the node (systeminformation).',
    (f) => f.physicalCores,
  );
  fact(
    'resizelet_node_memory_bytes',
    'Memory installed in the node (systeminformation).',
    (f) => f.memoryBytes,
  );
  scrape('resizelet_node_info', 'The node this agent runs on; always 1.', 'gauge', async () => {
    const f = await facts.get();
    return [{ value: 1, labels: { node: deps.nodeName, cpu_model: f?.cpuModel ?? '' } }];
  });
}

function splitKey(key: string): [string, string] {
  const i = key.indexOf('/');
  return [key.slice(0, i), key.slice(i + 1)];
}
