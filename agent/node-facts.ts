// Facts about the machine (CPUs, memory) from systeminformation, for the resizelet_node_* series. They do
// not change between scrapes, and systeminformation's CPU probe runs `lscpu` (~80 ms): probe once, keep the
// answer, refresh lazily after a long TTL (CPU or memory hotplug) and never on a timer.
import si from 'systeminformation';

export interface NodeFacts {
  /** Logical CPUs (what cpu quotas are measured against). */
  cpus: number;
  physicalCores: number;
  /** Installed memory (MemTotal). */
  memoryBytes: number;
  cpuModel: string;
}

export interface NodeFactsSource {
  /** The last probed facts, probing first if none are known or they are stale; undefined if probing fails. */
  get(): Promise<NodeFacts | undefined>;
}

export interface NodeFactsOptions {
  probe?: () => Promise<NodeFacts>;
  ttlMs?: number;
  now?: () => number;
}

export async function probeSysteminformation(): Promise<NodeFacts> {
  const [cpu, mem] = await Promise.all([si.cpu(), si.mem()]);
  return {
    cpus: cpu.cores,
    physicalCores: cpu.physicalCores,
    memoryBytes: mem.total,
    cpuModel: [cpu.manufacturer, cpu.brand].filter(Boolean).join(' '),
  };
}

export function createNodeFacts(opts: NodeFactsOptions = {}): NodeFactsSource {
  const probe = opts.probe ?? probeSysteminformation;
  const ttl = opts.ttlMs ?? 10 * 60_000;
  const now = opts.now ?? Date.now;
  let facts: NodeFacts | undefined;
  let probedAt = -Infinity;
  let inflight: Promise<NodeFacts | undefined> | undefined;

  const refresh = () =>
    (inflight ??= probe()
      .then(
        (f) => {
          facts = f;
          return f;
        },
        // Keep what we had: a failed probe (e.g. a missing /proc file in a sandbox) is not worth an error.
        () => facts,
      )
      .finally(() => {
        probedAt = now();
        inflight = undefined;
      }));

  return {
    async get() {
      if (now() - probedAt < ttl) return facts;
      // Stale: answer with the old facts while one probe refreshes them, so no scrape waits on lscpu again.
      if (facts) {
        void refresh();
        return facts;
      }
      return refresh();
    },
  };
}
