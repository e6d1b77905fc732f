// Everything the CLI prints, as pure functions of the pods and the clock: the status table and the
// progress lines of `resize --wait`. Tested as tables of strings; no I/O here.
import type { PodLike } from '../../agent/resize/pod.ts';
import { decodeStatus, type ResourceStatus, type WireAllocation } from '../../agent/resize/status.ts';
import { Annotations } from '../../agent/resize/vocabulary.ts';

type Side = { readonly cpu?: string | number; readonly memory?: string | number } | undefined;

/** "cpu 100m/200m, memory 64Mi/256Mi": request/limit per resource, "-" for unset. */
export function formatResources(requests: Side, limits: Side): string {
  const part = (r: 'cpu' | 'memory'): string | undefined => {
    const req = requests?.[r];
    const lim = limits?.[r];
    if (req === undefined && lim === undefined) return undefined;
    return `${r} ${req ?? '-'}/${lim ?? '-'}`;
  };
  const parts = [part('cpu'), part('memory')].filter((p) => p !== undefined);
  return parts.length > 0 ? parts.join(', ') : '-';
}

/** kubectl's AGE style: 45s, 3m, 2h, 5d. */
export function formatAge(from: string | undefined, now: Date): string {
  const t = from ? Date.parse(from) : NaN;
  if (Number.isNaN(t)) return '-';
  const s = Math.max(0, Math.floor((now.getTime() - t) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7_200) return `${Math.floor(s / 60)}m`;
  if (s < 172_800) return `${Math.floor(s / 3_600)}h`;
  return `${Math.floor(s / 86_400)}d`;
}

export interface StatusTableOptions {
  /** Show a NAMESPACE column (with -A). */
  namespaces: boolean;
  now: Date;
}

/** Pods that carry a request or a status: what `status -A` and `status` without a pod list. */
export function knowsResizelet(pod: PodLike): boolean {
  const a = pod.metadata?.annotations ?? {};
  return a[Annotations.request] !== undefined || a[Annotations.status] !== undefined;
}

export function statusTable(pods: readonly PodLike[], opts: StatusTableOptions): string {
  const header = [
    ...(opts.namespaces ? ['NAMESPACE'] : []),
    'POD',
    'CONTAINER',
    'SPEC (REQ/LIM)',
    'ALLOCATED (REQ/LIM)',
    'STATUS',
    'AGE',
    'MESSAGE',
  ];
  const rows: string[][] = [];
  for (const pod of pods) {
    const status: ResourceStatus | undefined = decodeStatus(pod.metadata?.annotations?.[Annotations.status]);
    const allocated = new Map<string, WireAllocation>();
    for (const a of status?.allocatedResources ?? []) {
      if (a && typeof a === 'object' && typeof a.name === 'string') allocated.set(a.name, a);
    }
    for (const c of pod.spec?.containers ?? []) {
      const alloc = allocated.get(c.name);
      rows.push([
        ...(opts.namespaces ? [pod.metadata?.namespace ?? ''] : []),
        pod.metadata?.name ?? '',
        c.name,
        formatResources(c.resources?.requests, c.resources?.limits),
        alloc ? formatResources(alloc.requests, alloc.limits) : '-',
        status?.resizeStatus ?? '-',
        formatAge(status?.lastTransitionTime, opts.now),
        oneLine(status?.message ?? ''),
      ]);
    }
  }
  return renderTable(header, rows);
}

function oneLine(text: string): string {
  return text.replace(/\s+/g, ' ').trim();
}

/** Left-aligned columns three spaces apart, like kubectl; the last column is never padded. */
export function renderTable(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join('   ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n') + '\n';
}

/** "app: cpu 100m/1, memory 64Mi/256Mi; sidecar: ..." */
export function formatAllocations(allocations: readonly WireAllocation[]): string {
  return allocations.map((a) => `${a.name}: ${formatResources(a.requests, a.limits)}`).join('; ');
}

/** One line per status transition while waiting: elapsed time, status, and what the agent said. */
export function progressLine(status: ResourceStatus, elapsedMs: number): string {
  const t = `+${(elapsedMs / 1000).toFixed(1)}s`.padStart(7);
  const detail =
    status.resizeStatus === 'Completed' && status.allocatedResources.length > 0
      ? `allocated ${formatAllocations(status.allocatedResources)}`
      : oneLine(status.message ?? '');
  return `${t}  ${status.resizeStatus.padEnd(9)}${detail ? `  ${detail}` : ''}`.trimEnd() + '\n';
}
