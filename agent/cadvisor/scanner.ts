// The walk: every cgroup cAdvisor would report for the node's pods, read at scrape time through a StatsReader
// (cgroup-stats.ts), with each pod's directory listing and labels kept between scrapes.
import { setImmediate as nextTurn } from 'node:timers/promises';
import { podCgroupPath, PathError } from '../../cgroup/paths.ts';
import type { CgroupLayout, CgroupPath, QosClass } from '../../cgroup/types.ts';
import { podKey, type PodLike } from '../resize/pod.ts';
import { StatsError, type StatsReader } from '../cgroup-stats.ts';
import {
  containersById,
  idOf,
  nodeLevelPaths,
  qosOf,
  targetsOf,
  type NodeScan,
  type ScannedCgroup,
  type ScanProblem,
  type Target,
} from './targets.ts';

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
