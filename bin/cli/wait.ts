// `resize --wait`: follow one pod's status annotation until the agent answers *this* request (its hash is
// the status's observedRequest) with Completed or Rejected, or the time runs out. It watches the pod
// (fieldSelector metadata.name=POD) from the resourceVersion the patch returned, so no transition between
// the patch and the watch can be missed; when a watch ends or fails it re-reads the pod and watches again.
import type * as k8s from '@kubernetes/client-node';
import { decodeStatus, type ResourceStatus } from '../../agent/resize/status.ts';
import { Annotations } from '../../agent/resize/vocabulary.ts';
import { CliError } from './errors.ts';
import { progressLine } from './format.ts';
import { statusOf, type PodApi } from './kube.ts';

export type WaitOutcome =
  | { kind: 'Completed'; status: ResourceStatus }
  | { kind: 'Rejected'; status: ResourceStatus }
  | { kind: 'timeout'; last: ResourceStatus | undefined; lastError: unknown };

export interface WaitOptions {
  api: PodApi;
  namespace: string;
  name: string;
  hash: string;
  /** The pod as the patch returned it: its status is the first line, its resourceVersion the watch's start. */
  patched: k8s.V1Pod;
  timeoutMs: number;
  /** When the request was written; progress lines show the time since. */
  startedAt: number;
  now(): number;
  write(line: string): void;
}

const RESYNC_PAUSE_MS = 500;

export async function waitForAnswer(opts: WaitOptions): Promise<WaitOutcome> {
  const { api, namespace, name, hash } = opts;
  const deadline = opts.startedAt + opts.timeoutMs;
  let last: ResourceStatus | undefined;
  let shown = '';
  let lastError: unknown;
  let finish: (o: WaitOutcome | CliError) => void = () => undefined;
  const finished = new Promise<WaitOutcome | CliError>((resolve) => (finish = resolve));
  let done = false;

  const consider = (pod: k8s.V1Pod): void => {
    if (done) return;
    const status = decodeStatus(pod.metadata?.annotations?.[Annotations.status]);
    // Statuses for an earlier request (a late publish racing our patch) say nothing about this one.
    if (!status || status.observedRequest !== hash) return;
    last = status;
    const key = `${status.resizeStatus}\u0000${status.message ?? ''}`;
    if (key !== shown) {
      shown = key;
      opts.write(progressLine(status, opts.now() - opts.startedAt));
    }
    if (status.resizeStatus === 'Completed' || status.resizeStatus === 'Rejected') {
      done = true;
      finish(
        status.resizeStatus === 'Completed' ? { kind: 'Completed', status } : { kind: 'Rejected', status },
      );
    }
  };
  const deleted = (): void => {
    if (done) return;
    done = true;
    finish(new CliError(`pod ${namespace}/${name} was deleted while waiting for its resize`));
  };

  consider(opts.patched);
  let resourceVersion = opts.patched.metadata?.resourceVersion;
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), Math.max(0, deadline - opts.now()));
  });
  const pause = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms).unref());

  try {
    while (!done) {
      let abort: (() => void) | undefined;
      try {
        const w = await api.watch(namespace, name, resourceVersion, (type, obj) => {
          if (type === 'ADDED' || type === 'MODIFIED') {
            resourceVersion = obj.metadata?.resourceVersion ?? resourceVersion;
            consider(obj);
          } else if (type === 'DELETED') {
            deleted();
          } else if (type === 'ERROR') {
            // Most often 410 Gone: our resourceVersion left the server's window. Re-read and start over.
            resourceVersion = undefined;
            abort?.();
          }
        });
        abort = w.abort;
        const ended = await Promise.race([w.ended, finished, timedOut]);
        w.abort();
        if (ended === 'timeout') break;
        if (ended instanceof Error || (ended && typeof ended === 'object' && 'statusCode' in ended)) {
          lastError = ended;
        }
      } catch (err) {
        lastError = err;
      }
      if (done) break;
      const wake = await Promise.race([pause(RESYNC_PAUSE_MS), timedOut]);
      if (wake === 'timeout') break;
      try {
        const pod = await api.get(namespace, name);
        resourceVersion = pod.metadata?.resourceVersion;
        consider(pod);
      } catch (err) {
        if (statusOf(err) === 404) deleted();
        else lastError = err;
      }
    }
  } finally {
    clearTimeout(timer);
  }
  if (done) {
    const outcome = await finished;
    if (outcome instanceof CliError) throw outcome;
    return outcome;
  }
  return { kind: 'timeout', last, lastError };
}
