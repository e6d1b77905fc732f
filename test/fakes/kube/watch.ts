// One open watch: a chunked HTTP response of newline-delimited JSON watch events, fed from the
// store's history (replay) and then from live changes, filtered the way the API server's cacher does.
import type { ServerResponse } from 'node:http';
import { apiVersionOf } from './resources.ts';
import type { KubeObject, ResourceDef } from './resources.ts';
import { matches } from './selectors.ts';
import type { Selector } from './selectors.ts';
import { ApiError } from './status.ts';
import type { Change, Store } from './store.ts';

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';

export interface WatchRequest {
  readonly def: ResourceDef;
  readonly namespace: string | undefined;
  readonly selector: Selector;
  /** undefined or 0: start with synthetic ADDED events for what exists now, like the real server. */
  readonly resourceVersion: number | undefined;
  readonly allowBookmarks: boolean;
  readonly timeoutSeconds: number | undefined;
}

export interface WatchOptions {
  readonly bookmarkIntervalMs: number;
}

export class WatchStream {
  private readonly res: ServerResponse;
  private readonly store: Store;
  private readonly req: WatchRequest;
  private readonly timers: NodeJS.Timeout[] = [];
  private unsubscribe: (() => void) | undefined;
  private closed = false;

  constructor(res: ServerResponse, store: Store, req: WatchRequest) {
    this.res = res;
    this.store = store;
    this.req = req;
  }

  /** Sends headers, replays, and goes live, all in one tick so no change falls between replay and live. */
  start(opts: WatchOptions, onClose: () => void): void {
    this.res.on('close', () => {
      this.cleanup();
      onClose();
    });
    this.res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-cache, private' });
    this.res.flushHeaders();
    const { def, namespace, selector, resourceVersion } = this.req;
    if (resourceVersion === undefined || resourceVersion === 0) {
      for (const obj of this.store.list(def, namespace)) if (matches(selector, obj)) this.send('ADDED', obj);
    } else {
      let replay: Change[];
      try {
        replay = this.store.changesSince(def, resourceVersion);
      } catch (err) {
        // The real server has already answered 200 by the time it finds the rv too old, so a
        // 410 arrives as an ERROR event carrying the Status, and then the stream ends.
        if (!(err instanceof ApiError)) throw err;
        this.send('ERROR', err.status);
        this.end();
        return;
      }
      for (const c of replay) this.deliver(c);
    }
    this.unsubscribe = this.store.subscribe((c) => {
      if (c.def === def) this.deliver(c);
    });
    if (this.req.allowBookmarks) {
      this.timers.push(setInterval(() => this.bookmark(), opts.bookmarkIntervalMs));
    }
    if (this.req.timeoutSeconds !== undefined) {
      this.timers.push(setTimeout(() => this.end(), this.req.timeoutSeconds * 1000));
    }
  }

  /** A clean end of stream, as when the server's watch timeout expires. */
  end(): void {
    if (this.closed) return;
    this.cleanup();
    this.res.end();
  }

  /** Drop the connection without a terminating chunk, as when the network or the server dies. */
  destroy(): void {
    this.cleanup();
    this.res.socket?.destroy();
    this.res.destroy();
  }

  private cleanup(): void {
    this.closed = true;
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    for (const t of this.timers) clearTimeout(t);
    this.timers.length = 0;
  }

  /**
   * A change seen through this watch's namespace and selector. An object that starts matching is
   * ADDED, one that stops matching is DELETED (its previous state, stamped with the new rv), as
   * the cacher does, so a node-scoped watch sees a pod leave the node as a deletion.
   */
  private deliver(c: Change): void {
    const { namespace, selector } = this.req;
    const visible = (o: KubeObject | undefined): o is KubeObject =>
      o !== undefined &&
      (namespace === undefined || o.metadata.namespace === namespace) &&
      matches(selector, o);
    const now = c.type !== 'DELETED' && visible(c.object);
    const before = visible(c.prev);
    if (now && before) this.send('MODIFIED', c.object);
    else if (now) this.send('ADDED', c.object);
    else if (before) {
      const last =
        c.type === 'DELETED'
          ? c.object
          : { ...c.prev!, metadata: { ...c.prev!.metadata, resourceVersion: String(c.rv) } };
      this.send('DELETED', last);
    }
  }

  private bookmark(): void {
    const { def } = this.req;
    this.send('BOOKMARK', {
      kind: def.kind,
      apiVersion: apiVersionOf(def),
      metadata: { resourceVersion: String(this.store.currentRv()) },
    });
  }

  private send(type: WatchEventType, object: unknown): void {
    if (this.closed) return;
    this.res.write(JSON.stringify({ type, object }) + '\n');
  }
}
