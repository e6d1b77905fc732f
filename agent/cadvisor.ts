// The cAdvisor-compatible view of the node: which cgroups exist for the node's pods, how cAdvisor (as served
// by the kubelet at /metrics/cadvisor) labels each one, and the container_* families rendered from them at
// scrape time.
//
// Labelling, copied from the kubelet's real output (test/fixtures/real-node-v1-cgroupfs/cadvisor-metrics.txt):
//   id        the cgroup path below the hierarchy mount, with a leading "/" (`/kubepods/burstable/pod<uid>/<cid>`)
//   container the container's name; "" for the pod-level cgroup AND for the sandbox (pause) container
//   pod, namespace  the pod's; "" for cgroups above the pods (`/kubepods`, `/kubepods/burstable`)
//   name      the 64-hex container ID for containers and the sandbox; "" for pod and node levels
//   image     the container's image; the sandbox's is the pause image (not in the pod object: see
//             `sandboxImage`); "" for pod and node levels
// `container_cpu_usage_seconds_total` carries `cpu="total"` (the kubelet disables per-CPU usage) and, like
// cAdvisor, is absent while the usage is 0. The CFS series and `container_spec_cpu_quota` exist only when
// a quota is set. An unlimited memory limit reads 0. Values carry no timestamps (cAdvisor stamps them with
// its last housekeeping time; ours are read during the scrape, so the scrape's own time is the truth).
//
// Exposition: these families are rendered here rather than through prom-client. prom-client can express
// them (custom get() values with shared label objects were tried first), but at ~12k series per scrape on a
// 500-container node its per-series formatting (label object walks, escaping, string joins) cost ~60 ms a
// scrape on the 2-core bench machine, over twice the whole scrape budget, and built the ~3 MB text as one
// string. Here each cgroup's label text is escaped and encoded once and reused across scrapes, and lines
// are copied into one buffer per scrape (see CadvisorRenderer). Everything else on /metrics (resizelet_*,
// process, engine counters) stays on the app's prom-client registry.
import { setImmediate as nextTurn } from 'node:timers/promises';
import { classifyChildDir, parseContainerId, podCgroupPath, PathError } from '../cgroup/paths.ts';
import type { CgroupLayout, CgroupPath, QosClass } from '../cgroup/types.ts';
import { podKey, qosClassOf, specResources, type ContainerStatusLike, type PodLike } from './resize/pod.ts';
import { StatsError, type CgroupStats, type StatsReader } from './cgroup-stats.ts';

// ---------------------------------------------------------------------------------------------------------
// Which cgroups, labelled how

export type CgroupLevel = 'node' | 'pod' | 'sandbox' | 'container';

/** cAdvisor's label set for one cgroup. */
export type CadvisorLabels = {
  container: string;
  id: string;
  image: string;
  name: string;
  namespace: string;
  pod: string;
};

export interface ScannedCgroup {
  path: CgroupPath;
  level: CgroupLevel;
  labels: CadvisorLabels;
  /** `namespace/name` for pod, sandbox and container levels. */
  podKey?: string;
  /** `<runtime>://<id>` as in containerStatuses, for containers the pod object names. */
  containerID?: string;
  stats: CgroupStats;
}

export interface ScanProblem {
  path: string;
  code: string;
  message: string;
}

export interface NodeScan {
  cgroups: ScannedCgroup[];
  /** Cgroups or pods that could not be read (permission, parse errors, unsafe IDs); gone ones are not problems. */
  problems: ScanProblem[];
  durationMs: number;
}

const QOS_CLASSES: readonly string[] = ['Guaranteed', 'Burstable', 'BestEffort'];
const PLACEHOLDER_UID = '00000000-0000-0000-0000-000000000000';

interface Named {
  name: string;
  image: string;
  containerID: string;
}

/** A structural read of `image`, which the engine's PodLike does not declare but every API pod has. */
const imageOf = (o: unknown): string =>
  typeof o === 'object' && o !== null && 'image' in o && typeof o.image === 'string' ? o.image : '';

/**
 * The containers a pod object names, by bare container ID: regular, init and ephemeral ones. The image is the
 * status's (the runtime's resolved reference, which is what cAdvisor reads from the runtime), else the spec's.
 */
function containersById(pod: PodLike): Map<string, Named> {
  const specImage = new Map<string, string>();
  const spec = pod.spec as (PodLike['spec'] & Record<string, unknown>) | undefined;
  for (const list of [spec?.containers, spec?.initContainers, spec?.ephemeralContainers]) {
    for (const c of list ?? []) specImage.set(c.name, imageOf(c));
  }
  const status = pod.status as Record<string, unknown> | undefined;
  const out = new Map<string, Named>();
  for (const key of ['containerStatuses', 'initContainerStatuses', 'ephemeralContainerStatuses']) {
    const list = status?.[key];
    if (!Array.isArray(list)) continue;
    for (const s of list as ContainerStatusLike[]) {
      if (!s?.containerID) continue;
      try {
        const { id } = parseContainerId(s.containerID);
        out.set(id, {
          name: s.name,
          image: imageOf(s) || specImage.get(s.name) || '',
          containerID: s.containerID,
        });
      } catch {
        // An ID we cannot parse names no cgroup we could match.
      }
    }
  }
  return out;
}

function qosOf(pod: PodLike): QosClass {
  const q = pod.status?.qosClass;
  if (q && QOS_CLASSES.includes(q)) return q as QosClass;
  // Not reported yet: derive it as the API server would.
  return qosClassOf((pod.spec?.containers ?? []).map(specResources));
}

/** The pods root and the QoS-level cgroups below it (Guaranteed pods sit directly in the root). */
export function nodeLevelPaths(layout: CgroupLayout): CgroupPath[] {
  const parentOf = (qos: QosClass) =>
    podCgroupPath(layout, { uid: PLACEHOLDER_UID, qos }).split('/').slice(0, -1).join('/');
  return [...new Set([layout.podsRoot, parentOf('Burstable'), parentOf('BestEffort')])];
}

const idOf = (path: CgroupPath) => `/${path}`;

// ---------------------------------------------------------------------------------------------------------
// The walk

export interface ScannerOptions {
  reader: StatsReader;
  layout: CgroupLayout;
  /** The sandbox (pause) image for the sandbox's `image` label; the pod object does not carry it. */
  sandboxImage?: string;
  /**
   * A pod's child directories are listed again when its container IDs change, when a listed child is gone,
   * and at least this often (a replaced sandbox). Listing a kernfs directory costs ~40-100 us: not per scrape.
   */
  relistAfterMs?: number;
  /** Cgroups read per event-loop turn: ~30 us each, so the default keeps a turn near 2 ms. */
  batch?: number;
  /** Monotonic ms. */
  now?: () => number;
}

export interface ScanRequest {
  pods: readonly PodLike[];
  /** Read only this pod and skip the node-level cgroups (a JSON request for one pod). */
  only?: PodLike;
}

export interface NodeScanner {
  scan(req: ScanRequest): Promise<NodeScan>;
}

/** What a cgroup is, as the walk reports it; fixed for the cgroup's life, so computed once per listing. */
type Target = Omit<ScannedCgroup, 'stats'>;

interface Listing {
  /** The pod object the targets were made from: the informer replaces the object on every update. */
  pod: PodLike;
  ids: string;
  /** QoS at listing time: a pod's QoS class never changes, so neither does its cgroup. */
  qos: QosClass;
  podPath: CgroupPath;
  children: string[];
  /** The pod level first, then its sandbox and containers. */
  targets: Target[];
  at: number;
  stale: boolean;
}

/** The pod-level target and its children's, labelled from the pod object. */
function targetsOf(
  layout: CgroupLayout,
  pod: PodLike,
  podPath: CgroupPath,
  children: readonly string[],
  named: Map<string, Named>,
  sandboxImage: string,
): Target[] {
  const namespace = pod.metadata?.namespace ?? '';
  const podName = pod.metadata?.name ?? '';
  const podKey = `${namespace}/${podName}`;
  // Label objects are written in cAdvisor's (sorted) order, so the exposition reads like the kubelet's.
  const out: Target[] = [
    {
      path: podPath,
      level: 'pod',
      labels: { container: '', id: idOf(podPath), image: '', name: '', namespace, pod: podName },
      podKey,
    },
  ];
  for (const child of children) {
    const dir = classifyChildDir(layout.driver, child);
    // conmon (CRI-O's monitor) is not a container; cAdvisor skips it too. Unknown names are not ours.
    if (!dir || dir.kind === 'conmon') continue;
    const path = `${podPath}/${child}`;
    const c = dir.kind === 'container' ? named.get(dir.id) : undefined;
    // A container-shaped directory the pod object does not name is the sandbox (its ID is never in
    // containerStatuses); a container started a moment ago and not yet in the status reads as one too
    // until the next pod update, which `container!=""` queries ignore either way.
    const labels: CadvisorLabels = {
      container: c?.name ?? '',
      id: idOf(path),
      image: c ? c.image : sandboxImage,
      name: dir.id,
      namespace,
      pod: podName,
    };
    out.push(
      c
        ? { path, level: 'container', labels, podKey, containerID: c.containerID }
        : { path, level: 'sandbox', labels, podKey },
    );
  }
  return out;
}

/**
 * Reads every cgroup cAdvisor would report for the node's pods. Synchronous reads in batches, yielding to
 * the event loop between them (see cgroup-stats.ts for why synchronous).
 */
export function createNodeScanner(opts: ScannerOptions): NodeScanner {
  const { reader, layout } = opts;
  const now = opts.now ?? (() => performance.now());
  const batch = opts.batch ?? 64;
  const relistAfter = opts.relistAfterMs ?? 60_000;
  const listings = new Map<string, Listing>();
  // Pods listed together (at start) would all be listed again in the same scrape: spread them over
  // 75-100% of the interval, by UID so the schedule is stable.
  const spread = (uid: string) => {
    let h = 0;
    for (let i = 0; i < uid.length; i++) h = (h * 31 + uid.charCodeAt(i)) >>> 0;
    return 0.75 + (h % 1000) / 4000;
  };
  const nodeTargets: Target[] = nodeLevelPaths(layout).map((path) => ({
    path,
    level: 'node',
    labels: { container: '', id: idOf(path), image: '', name: '', namespace: '', pod: '' },
  }));

  /** The pod's listing, made again when the pod object or its directory may have changed; null: no cgroup. */
  function listingOf(pod: PodLike, uid: string): Listing | null {
    const old = listings.get(uid);
    const fresh = old && !old.stale && now() - old.at <= relistAfter * spread(uid);
    if (fresh && old.pod === pod) return old;
    const named = containersById(pod);
    const ids = [...named.keys()].sort().join(',');
    const qos = qosOf(pod);
    let { podPath, children, at } = old ?? { podPath: '', children: [] as string[], at: 0 };
    if (!fresh || old.ids !== ids || old.qos !== qos) {
      podPath = podCgroupPath(layout, { uid, qos });
      const listed = reader.children(podPath);
      // No cgroup: not started yet on this node, or already cleaned up.
      if (listed === null) {
        listings.delete(uid);
        return null;
      }
      children = listed;
      at = now();
    }
    const sandboxImage = opts.sandboxImage ?? '';
    const targets = targetsOf(layout, pod, podPath, children, named, sandboxImage);
    const listing: Listing = { pod, ids, qos, podPath, children, targets, at, stale: false };
    listings.set(uid, listing);
    return listing;
  }

  return {
    async scan(req) {
      const started = now();
      const cgroups: ScannedCgroup[] = [];
      const problems: ScanProblem[] = [];
      const seen = new Set<string>();
      let sinceYield = 0;

      const problem = (path: string, err: unknown) => {
        const code =
          err instanceof StatsError || err instanceof PathError
            ? err.code
            : ((err as { code?: string })?.code ?? 'RESIZELET_ERR_INTERNAL');
        problems.push({
          path,
          code: String(code),
          message: err instanceof Error ? err.message : String(err),
        });
      };

      /**
       * Reads one cgroup; false when it does not exist. Synchronous: the loops below yield to the event
       * loop every `batch` cgroups, rather than awaiting each cgroup (a promise and an async frame per
       * cgroup were most of a scrape's garbage).
       */
      const visit = (t: Target): boolean => {
        sinceYield++;
        try {
          const stats = reader.read(t.path);
          if (!stats) return false;
          cgroups.push({
            path: t.path,
            level: t.level,
            labels: t.labels,
            podKey: t.podKey,
            containerID: t.containerID,
            stats,
          });
        } catch (err) {
          problem(t.labels.id, err);
        }
        return true;
      };
      const turn = () => {
        sinceYield = 0;
        return nextTurn();
      };

      if (!req.only) {
        for (const t of nodeTargets) {
          visit(t);
          if (sinceYield >= batch) await turn();
        }
      }

      for (const pod of req.only ? [req.only] : req.pods) {
        const uid = pod.metadata?.uid ?? '';
        seen.add(uid);
        let listing: Listing | null;
        try {
          listing = listingOf(pod, uid);
        } catch (err) {
          problem(podKey(pod), err);
          continue;
        }
        if (!listing) continue;
        const targets = listing.targets;
        const found = visit(targets[0]!);
        if (sinceYield >= batch) await turn();
        if (!found) {
          listings.delete(uid);
          continue;
        }
        for (let i = 1; i < targets.length; i++) {
          if (!visit(targets[i]!)) listing.stale = true;
          if (sinceYield >= batch) await turn();
        }
      }
      if (!req.only) for (const uid of listings.keys()) if (!seen.has(uid)) listings.delete(uid);
      return { cgroups, problems, durationMs: now() - started };
    },
  };
}

/** Wraps a walk so that calls while one is running share it (concurrent scrapes, JSON requests). */
export function sharedScan(run: () => Promise<NodeScan>): () => Promise<NodeScan> {
  let inflight: Promise<NodeScan> | undefined;
  return () => {
    inflight ??= run().finally(() => {
      inflight = undefined;
    });
    return inflight;
  };
}

// ---------------------------------------------------------------------------------------------------------
// Exposition

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
