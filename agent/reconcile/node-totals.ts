// Node admission's view of the other pods: what each pod of this node counts for (its spec, its allocation,
// a reservation in flight), memoized so a request sums the node without re-parsing every pod.
import { maxTotals, type RequestTotals } from '../resize/admission.ts';
import { effectiveTotals, statusAllocation } from '../resize/decide.ts';
import { isTerminal, podKey, type PodLike, type Resources } from '../resize/pod.ts';
import { parseCpuMillicores, parseMemoryBytes } from '../resize/quantity.ts';
import type { Checkpoint, CheckpointEntry } from './checkpoint.ts';
import { agentView, type PodState } from './pod-state.ts';
import type { ReconcilerDeps } from './ports.ts';

export interface NodeTotals {
  /** The requests of every other live pod of this node, as node admission takes them. */
  othersTotals(exceptKey: string): RequestTotals[];
  /** A pod is gone: drop its memoized spec totals. */
  forget(uid: string): void;
}

export function createNodeTotals(opts: {
  nodeName: string;
  cache: ReconcilerDeps['cache'];
  checkpoint: Checkpoint;
  /** Read only here; `publishedTotals` of a state is this module's memo. */
  states: ReadonlyMap<string, PodState>;
  allocationOf(pod: PodLike): Map<string, Resources> | undefined;
}): NodeTotals {
  const { nodeName, cache, checkpoint, states, allocationOf } = opts;

  // Admission looks at every pod on the node for every request. A pod's spec resources never change (this
  // is the point of resizelet), so their totals are computed once per pod UID; the allocation side is
  // re-read only when its source (checkpoint entry or status text) changed.
  const specTotalsByUid = new Map<string, RequestTotals>();
  const allocTotalsMemo = new WeakMap<object, RequestTotals>();
  function podTotals(p: PodLike, st: PodState | undefined): RequestTotals {
    const uid = p.metadata?.uid ?? '';
    let spec = specTotalsByUid.get(uid);
    if (!spec) {
      spec = effectiveTotals(p, undefined);
      specTotalsByUid.set(uid, spec);
    }
    const entry = uid ? checkpoint.get(uid) : undefined;
    let alloc: RequestTotals | undefined;
    if (entry) {
      alloc = allocTotalsMemo.get(entry);
      if (!alloc) {
        alloc = effectiveTotals(p, allocationOf(p));
        allocTotalsMemo.set(entry, alloc);
      }
    } else if (st?.published !== undefined) {
      // Only this agent's own status counts: a pod owner's annotation must not take room from other pods.
      // One memo per pod (a map keyed by status text kept thousands of dead texts between clears).
      if (st.publishedTotals?.text !== st.published) {
        const totals = effectiveTotals(p, statusAllocation(agentView(p, st)));
        st.publishedTotals = { text: st.published, totals };
      }
      alloc = st.publishedTotals.totals;
    }
    return alloc ? maxTotals(spec, alloc) : spec;
  }

  /**
   * A pod whose spec holds a quantity beyond what the agent counts exactly (a CPU limit of 1e16 passes API
   * validation) must not stop every other pod's admission: it counts with the requests that can be read.
   */
  function readableTotals(p: PodLike, st: PodState | undefined): RequestTotals {
    try {
      return podTotals(p, st);
    } catch {
      let cpuMilli = 0;
      let memoryBytes = 0n;
      for (const c of p.spec?.containers ?? []) {
        const r = c.resources?.requests ?? c.resources?.limits ?? {};
        try {
          if (r.cpu !== undefined) cpuMilli += parseCpuMillicores(String(r.cpu));
        } catch {
          // unreadable: not counted
        }
        try {
          if (r.memory !== undefined) memoryBytes += parseMemoryBytes(String(r.memory));
        } catch {
          // unreadable: not counted
        }
      }
      return { cpuMilli, memoryBytes };
    }
  }

  // Every request sums all other pods of the node. A pod's term is kept with what it was computed from (the
  // pod object, its checkpoint entry, this agent's status text, a reservation) and recomputed only when one
  // of those changed, so the sum is a walk over the cache, not a re-parse of every pod per request.
  const termMemo = new WeakMap<
    PodLike,
    {
      key: string;
      entry?: CheckpointEntry;
      published?: string;
      reserved?: RequestTotals;
      totals: RequestTotals;
    }
  >();
  function othersTotals(exceptKey: string): RequestTotals[] {
    let cpuMilli = 0;
    let memoryBytes = 0n;
    for (const p of cache.list()) {
      if (isTerminal(p) || p.spec?.nodeName !== nodeName) continue;
      let memo = termMemo.get(p);
      const key = memo?.key ?? podKey(p);
      if (key === exceptKey) continue;
      const st = states.get(key);
      const entry = checkpoint.get(p.metadata?.uid ?? '');
      if (
        !memo ||
        memo.entry !== entry ||
        memo.published !== st?.published ||
        memo.reserved !== st?.reserved
      ) {
        const eff = readableTotals(p, st);
        const totals = st?.reserved ? maxTotals(eff, st.reserved) : eff;
        memo = { key, entry, published: st?.published, reserved: st?.reserved, totals };
        termMemo.set(p, memo);
      }
      cpuMilli += memo.totals.cpuMilli;
      memoryBytes += memo.totals.memoryBytes;
    }
    return [{ cpuMilli, memoryBytes }];
  }

  return {
    othersTotals,
    forget(uid) {
      specTotalsByUid.delete(uid);
    },
  };
}
