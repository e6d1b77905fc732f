// Glue between a plan and systemd, used by the actuator on systemd-driver nodes: before the executor writes
// the cgroup files, hand the same values to systemd as runtime unit properties, call by call in the plan's
// safe order. systemd is what makes a resize survive `systemctl daemon-reload`; the direct writes that follow
// are what make it exact and what make it happen at all when systemd cannot be reached. So nothing here may
// hold a resize up: the whole exchange has a deadline, and any failure ends it with a typed fallback reason
// and lets the direct writes proceed.
import {
  NO_SUCH_UNIT,
  SystemdFailureReasons,
  toSystemdCallError,
  type SystemdFailureReason,
  type SystemdPort,
} from './systemd-bus.ts';
import {
  propertiesForFile,
  propertiesFromSettings,
  SystemdQuotaGranularity,
  systemdRenderingsOf,
  unitNameOf,
  unitPropertySets,
  type UnitPropertySet,
} from './systemd.ts';
import { DEFAULT_CPU_PERIOD_US } from './convert.ts';
import type {
  CgroupPath,
  CgroupSettings,
  CgroupVersion,
  Controller,
  ExecutionResult,
  Plan,
} from './types.ts';

/** The whole exchange for one plan, not each call: a resize waits at most this long for systemd. */
export const DEFAULT_SYSTEMD_APPLY_TIMEOUT_MS = 3_000;

export interface SystemdFallback {
  reason: SystemdFailureReason;
  /** For the status message and logs, e.g. "timeout: no answer from systemd within 3000 ms". */
  message: string;
  /** The unit whose call failed. */
  unit: string;
}

export interface SystemdApplyLog {
  debug(obj: Record<string, unknown>, msg: string): void;
  warn(obj: Record<string, unknown>, msg: string): void;
}

export interface SystemdApplyOptions {
  port: SystemdPort;
  plan: Plan;
  versions: Record<Controller, CgroupVersion>;
  /** The live CFS period of a cgroup (v1 quota writes do not carry it). */
  periodOf(path: CgroupPath): number;
  timeoutMs?: number;
  /** How finely systemd keeps a per-second CPU quota across a reload (see SystemdQuotaGranularity). */
  quotaGranularity?: bigint;
  /**
   * Cgroups whose other settings systemd must also be told, after the plan's calls: set when an earlier
   * exchange for the pod fell back, so systemd may hold older values than the files. These values are
   * already in the files, so sending them changes nothing the kernel sees; it only brings systemd up to date.
   */
  resync?: ReadonlyArray<{ path: CgroupPath; settings: CgroupSettings }>;
  log?: SystemdApplyLog;
}

export interface SystemdApplyResult {
  /** Calls systemd accepted, in the order made. */
  applied: UnitPropertySet[];
  /** Indices of plan writes systemd has applied (it writes the files before it answers). */
  viaSystemd: Set<number>;
  /**
   * Plan write index -> other texts its file may read back because systemd holds the value: systemd's own
   * rendering of the property sent, now and after a reload. For the executor's read-back, nothing else.
   */
  alsoAccept: Map<number, string[]>;
  /** Units systemd does not know (NoSuchUnit): it never resets what it does not manage, so no fallback. */
  unknownUnits: string[];
  fallback?: SystemdFallback;
}

/** Rejects when the signal fires: a port that ignored its signal still cannot keep us waiting. */
function deadline(signal: AbortSignal): { promise: Promise<never>; dispose(): void } {
  let onAbort = (): void => undefined;
  const promise = new Promise<never>((_resolve, reject) => {
    onAbort = () => reject(Object.assign(new Error('deadline passed'), { code: 'ETIMEDOUT' }));
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
  });
  promise.catch(() => undefined);
  return { promise, dispose: () => signal.removeEventListener('abort', onAbort) };
}

/** Calls that bring systemd up to date on settings the plan does not touch (see `resync`). */
function resyncSets(opts: SystemdApplyOptions, planned: UnitPropertySet[]): UnitPropertySet[] {
  const out: UnitPropertySet[] = [];
  for (const { path, settings } of opts.resync ?? []) {
    const unit = unitNameOf(path);
    if (unit === null) continue;
    const sent = new Set(
      planned.filter((s) => s.path === path).flatMap((s) => s.properties.map((p) => p.name)),
    );
    const properties = propertiesFromSettings(opts.versions, settings).filter((p) => !sent.has(p.name));
    if (properties.length > 0) out.push({ unit, path, properties, writes: [] });
  }
  return out;
}

async function callAll(
  port: SystemdPort,
  calls: readonly UnitPropertySet[],
  timeoutMs: number,
  log: SystemdApplyLog | undefined,
): Promise<{ applied: UnitPropertySet[]; unknownUnits: string[]; fallback?: SystemdFallback }> {
  const applied: UnitPropertySet[] = [];
  const unknownUnits: string[] = [];
  if (calls.length === 0) return { applied, unknownUnits };
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timeoutMs);
  timer.unref?.();
  const limit = deadline(abort.signal);
  try {
    for (const call of calls) {
      try {
        // runtime=true: the properties live until the unit stops or systemd reboots, never in /etc. A
        // container's scope goes away with the container anyway, and a restarted container gets the spec's
        // values back from runc, which the reconcile loop then corrects.
        await Promise.race([
          port.setUnitProperties(call.unit, true, call.properties, { signal: abort.signal }),
          limit.promise,
        ]);
        applied.push(call);
        log?.debug(
          { unit: call.unit, properties: call.properties.map((p) => `${p.name}=${p.value}`) },
          'systemd unit properties set',
        );
      } catch (err) {
        const e = toSystemdCallError(err, `SetUnitProperties(${call.unit})`);
        if (e.reason === SystemdFailureReasons.refused && e.dbusName === NO_SUCH_UNIT) {
          unknownUnits.push(call.unit);
          log?.debug({ unit: call.unit }, 'systemd does not know the unit; writing its cgroup directly');
          continue;
        }
        const message =
          e.reason === SystemdFailureReasons.timeout
            ? `timeout: no answer from systemd within ${timeoutMs} ms`
            : `${e.reason}: ${e.message}`;
        // Stop at the first failure, so what systemd holds is always a prefix of the plan's safe order.
        return { applied, unknownUnits, fallback: { reason: e.reason, message, unit: call.unit } };
      }
    }
    return { applied, unknownUnits };
  } finally {
    clearTimeout(timer);
    limit.dispose();
  }
}

/** Hand a plan's values to systemd, before the direct writes. Never throws. */
export async function applyViaSystemd(opts: SystemdApplyOptions): Promise<SystemdApplyResult> {
  const writes = opts.plan.writes;
  const { sets } = unitPropertySets(writes, { versions: opts.versions, periodOf: opts.periodOf });
  const calls = [...sets, ...resyncSets(opts, sets)];
  const timeoutMs = opts.timeoutMs ?? DEFAULT_SYSTEMD_APPLY_TIMEOUT_MS;
  const outcome = await callAll(opts.port, calls, timeoutMs, opts.log);
  const viaSystemd = new Set<number>();
  const alsoAccept = new Map<number, string[]>();
  for (const call of outcome.applied) {
    for (const i of call.writes) {
      const w = writes[i]!;
      viaSystemd.add(i);
      const texts = systemdRenderingsOf(
        opts.versions[w.controller],
        w.file,
        w.value,
        opts.periodOf(w.path),
        opts.quotaGranularity ?? SystemdQuotaGranularity.beforeV257,
      );
      if (texts.length > 0) alsoAccept.set(i, texts);
    }
  }
  if (outcome.fallback) {
    opts.log?.warn(
      { unit: outcome.fallback.unit, reason: outcome.fallback.reason, err: outcome.fallback.message },
      'systemd unreachable: writing cgroups directly; a daemon-reload would undo this until it is re-applied',
    );
  }
  return { ...outcome, viaSystemd, alsoAccept };
}

/**
 * After the direct writes failed and were restored: put systemd's values back too, newest call first, so
 * systemd does not hold (and re-apply on the next reload) a resize that did not happen. The previous
 * values come from the plan (`write.previous`). Never throws; false when systemd may still hold new values.
 */
export async function undoViaSystemd(
  opts: Pick<SystemdApplyOptions, 'port' | 'plan' | 'versions' | 'periodOf' | 'timeoutMs' | 'log'> & {
    applied: readonly UnitPropertySet[];
  },
): Promise<boolean> {
  const calls: UnitPropertySet[] = [];
  for (const call of [...opts.applied].reverse()) {
    if (call.writes.length === 0) continue; // a re-sync sent values the files already held
    const properties = [...call.writes].reverse().flatMap((i) => {
      const w = opts.plan.writes[i]!;
      return propertiesForFile(opts.versions[w.controller], w.file, w.previous, opts.periodOf(w.path));
    });
    calls.push({ ...call, properties });
  }
  const outcome = await callAll(
    opts.port,
    calls,
    opts.timeoutMs ?? DEFAULT_SYSTEMD_APPLY_TIMEOUT_MS,
    opts.log,
  );
  if (outcome.fallback) {
    opts.log?.warn(
      { unit: outcome.fallback.unit, err: outcome.fallback.message },
      'could not put systemd unit properties back after a failed resize',
    );
  }
  return outcome.fallback === undefined;
}

// ---------------------------------------------------------------------------------------------------------
// Per-agent state: which pods systemd may be behind on

/** Pods remembered as out of date in systemd; beyond this the oldest are forgotten (a deleted pod's UID). */
const MAX_UNSYNCED = 10_000;

export interface SystemdSyncOptions {
  port: SystemdPort;
  versions: Record<Controller, CgroupVersion>;
  timeoutMs?: number;
  quotaGranularity?: bigint;
  log?: SystemdApplyLog;
}

/** What the actuator calls around the executor on a systemd-driver node. */
export interface SystemdSync {
  /**
   * Before the direct writes: the plan's values to systemd, in plan order, plus a re-sync of every other
   * setting of `cgroups` when an earlier exchange for this pod fell back.
   */
  before(args: SystemdSyncArgs): Promise<SystemdApplyResult>;
  /**
   * After the direct writes. A plan write systemd already made reads as `unchanged` to the executor: it is
   * reported `written`, since the value did change (drift checks count it). A failed plan is taken back
   * out of systemd as it was out of the files.
   */
  after(args: SystemdSyncArgs & { outcome: SystemdApplyResult; execution: ExecutionResult }): Promise<void>;
}

export interface SystemdSyncArgs {
  podUid: string;
  plan: Plan;
  /** The pod's and containers' cgroups as read for the plan. */
  cgroups: ReadonlyArray<{ path: CgroupPath; settings: CgroupSettings }>;
}

const periodsOf = (cgroups: SystemdSyncArgs['cgroups']): ((path: CgroupPath) => number) => {
  const m = new Map(cgroups.map((c) => [c.path, c.settings.cpuPeriodUs]));
  return (path) => m.get(path) ?? DEFAULT_CPU_PERIOD_US;
};

export function createSystemdSync(opts: SystemdSyncOptions): SystemdSync {
  // A pod whose last exchange fell back: its files hold values systemd does not, and a daemon-reload would
  // put systemd's back. Every later apply (the reconcile loop's drift checks included) re-sends them all.
  const unsynced = new Set<string>();
  const mark = (uid: string): void => {
    unsynced.delete(uid);
    unsynced.add(uid);
    if (unsynced.size > MAX_UNSYNCED) unsynced.delete(unsynced.values().next().value!);
  };

  return {
    before({ podUid, plan, cgroups }) {
      return applyViaSystemd({
        port: opts.port,
        plan,
        versions: opts.versions,
        periodOf: periodsOf(cgroups),
        timeoutMs: opts.timeoutMs,
        quotaGranularity: opts.quotaGranularity,
        log: opts.log,
        resync: unsynced.has(podUid) ? cgroups : undefined,
      });
    },

    async after({ podUid, plan, cgroups, outcome, execution }) {
      for (const i of outcome.viaSystemd) {
        const r = execution.results[i];
        if (r?.status === 'unchanged') r.status = 'written';
      }
      let inSync = outcome.fallback === undefined;
      if (!execution.ok && outcome.applied.length > 0) {
        const undone = await undoViaSystemd({
          port: opts.port,
          plan,
          versions: opts.versions,
          periodOf: periodsOf(cgroups),
          timeoutMs: opts.timeoutMs,
          log: opts.log,
          applied: outcome.applied,
        });
        inSync &&= undone;
      }
      if (inSync) unsynced.delete(podUid);
      else mark(podUid);
    },
  };
}
