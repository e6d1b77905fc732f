// The fake's etcd plus the generic registry on top of it: one global integer resourceVersion, a
// bounded per-resource history for watch replay, and create/update/delete with the real server's
// preconditions. Everything here is synchronous, so a watcher that registers and replays history in
// one call cannot miss or double-see an event.
import { randomUUID } from 'node:crypto';
import { clone, deepEqual } from './patch.ts';
import { NAMESPACE, apiVersionOf, prepareForCreate, prepareForUpdate } from './resources.ts';
import type { KubeObject, ResourceDef, StrategyOptions } from './resources.ts';
import { errors } from './status.ts';

export type ChangeType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface Change {
  readonly def: ResourceDef;
  readonly type: ChangeType;
  readonly rv: number;
  /** The object after the change; for DELETED, the last state stamped with the deletion's rv. */
  readonly object: KubeObject;
  /** The object before the change (undefined for ADDED): lets a filtered watch turn a move out of its selection into DELETED. */
  readonly prev: KubeObject | undefined;
}

export interface StoreOptions {
  /** Changes kept per resource for watch replay; older ones make a watch from their rv 410. */
  readonly historySize: number;
  readonly now: () => Date;
  readonly strategy: StrategyOptions;
}

export interface Preconditions {
  resourceVersion?: string;
  uid?: string;
}

interface History {
  changes: Change[];
  /** A watch may resume from any rv >= horizon: every change after it is still in `changes`. */
  horizon: number;
}

const FIRST_RESOURCE_VERSION = 100;

function keyOf(def: ResourceDef, namespace: string | undefined, name: string): string {
  return def.namespaced ? `${namespace ?? ''}/${name}` : name;
}

function rfc3339(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

export class Store {
  private rv = FIRST_RESOURCE_VERSION;
  private readonly objects = new Map<ResourceDef, Map<string, KubeObject>>();
  private readonly histories = new Map<ResourceDef, History>();
  private readonly listeners = new Set<(c: Change) => void>();
  private readonly opts: StoreOptions;
  /** Horizon for histories created after an expireHistory(). */
  private horizonFloor = 0;

  constructor(opts: StoreOptions) {
    this.opts = opts;
  }

  currentRv(): number {
    return this.rv;
  }

  get(def: ResourceDef, namespace: string | undefined, name: string): KubeObject | undefined {
    const obj = this.table(def).get(keyOf(def, namespace, name));
    return obj && clone(obj);
  }

  /** In etcd key order (namespace, then name), which is the order a real list returns. */
  list(def: ResourceDef, namespace?: string): KubeObject[] {
    return [...this.table(def).entries()]
      .filter(([, o]) => namespace === undefined || o.metadata.namespace === namespace)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([, o]) => clone(o));
  }

  subscribe(fn: (c: Change) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** Changes to `def` after `rv`, or 410 Expired when some of them are no longer kept. */
  changesSince(def: ResourceDef, rv: number): Change[] {
    const h = this.history(def);
    if (rv < h.horizon) throw errors.expired(rv, h.horizon + 1);
    return h.changes.filter((c) => c.rv > rv);
  }

  /** Whether a list continue token minted at `rv` would still be served by the real server. */
  isExpired(def: ResourceDef, rv: number): boolean {
    return rv < this.history(def).horizon;
  }

  /** Forget all history: any watch resuming from an rv older than now gets 410. */
  expireHistory(): void {
    for (const h of this.histories.values()) {
      h.changes = [];
      h.horizon = this.rv;
    }
    this.horizonFloor = this.rv;
  }

  // -------------------------------------------------------------------------------------------
  // API writes: what a client reaches over HTTP, with the registry's checks and strategies.

  create(def: ResourceDef, namespace: string | undefined, body: KubeObject): KubeObject {
    const meta = body.metadata ?? {};
    if (def.namespaced) {
      if (meta.namespace && meta.namespace !== namespace) {
        throw errors.badRequest(
          'the namespace of the provided object does not match the namespace sent on the request',
        );
      }
      if (namespace === undefined || !this.get(NAMESPACE, undefined, namespace)) {
        throw errors.notFound(NAMESPACE, namespace ?? '');
      }
    }
    let name = meta.name;
    if (!name && meta.generateName) name = meta.generateName + randomUUID().slice(0, 5);
    if (!name) {
      throw errors.invalid(def.kind, '', [
        { field: 'metadata.name', message: 'Required value: name or generateName is required' },
      ]);
    }
    if (meta.resourceVersion)
      throw errors.badRequest('resourceVersion should not be set on objects to be created');
    if (this.table(def).has(keyOf(def, namespace, name))) throw errors.alreadyExists(def, name);
    const obj = prepareForCreate(def, clone(body));
    obj.metadata = { ...obj.metadata, name, ...(def.namespaced ? { namespace } : {}) };
    return this.commitCreate(def, obj);
  }

  update(
    def: ResourceDef,
    namespace: string | undefined,
    name: string,
    body: KubeObject,
    subresource?: string,
  ): KubeObject {
    const meta = body.metadata ?? {};
    if (meta.name !== undefined && meta.name !== name) {
      throw errors.badRequest(
        `the name of the object (${meta.name}) does not match the name on the URL (${name})`,
      );
    }
    if (def.namespaced && meta.namespace !== undefined && meta.namespace !== namespace) {
      throw errors.badRequest(
        'the namespace of the provided object does not match the namespace sent on the request',
      );
    }
    const prev = this.table(def).get(keyOf(def, namespace, name));
    if (!prev) throw errors.notFound(def, name);
    this.checkPreconditions(def, prev, { resourceVersion: meta.resourceVersion, uid: meta.uid });
    const metadata = { ...meta, name, ...(def.namespaced ? { namespace } : {}) };
    const next = prepareForUpdate(def, subresource, { ...body, metadata }, prev, this.opts.strategy);
    return this.commitUpdate(def, next, prev);
  }

  /** `apply` receives the stored object and returns the patched one; its resourceVersion acts as a precondition. */
  patch(
    def: ResourceDef,
    namespace: string | undefined,
    name: string,
    subresource: string | undefined,
    apply: (current: KubeObject) => KubeObject,
  ): KubeObject {
    const current = this.get(def, namespace, name);
    if (!current) throw errors.notFound(def, name);
    const patched = apply(current);
    if (typeof patched !== 'object' || patched === null || Array.isArray(patched)) {
      throw errors.badRequest('the patched object is not a JSON object');
    }
    return this.update(def, namespace, name, { ...patched, metadata: patched.metadata ?? {} }, subresource);
  }

  delete(def: ResourceDef, namespace: string | undefined, name: string, pre: Preconditions = {}): KubeObject {
    const prev = this.table(def).get(keyOf(def, namespace, name));
    if (!prev) throw errors.notFound(def, name);
    this.checkPreconditions(def, prev, pre);
    return this.commitDelete(def, prev);
  }

  // -------------------------------------------------------------------------------------------
  // Direct writes: the test plays kubelet, scheduler and admin, so no strategy and no preconditions.

  upsert(def: ResourceDef, body: KubeObject): KubeObject {
    const obj = clone(body);
    const name = obj.metadata?.name;
    if (!name) throw new Error(`upsert: ${def.kind} needs metadata.name`);
    const namespace = def.namespaced ? (obj.metadata.namespace ?? 'default') : undefined;
    obj.metadata = { ...obj.metadata, ...(def.namespaced ? { namespace } : {}) };
    if (namespace !== undefined) this.ensureNamespace(namespace);
    const prev = this.table(def).get(keyOf(def, namespace, name));
    return prev ? this.commitUpdate(def, obj, prev) : this.commitCreate(def, obj);
  }

  remove(def: ResourceDef, namespace: string | undefined, name: string): KubeObject | undefined {
    const prev = this.table(def).get(keyOf(def, namespace, name));
    return prev && this.commitDelete(def, prev);
  }

  ensureNamespace(name: string): void {
    if (this.table(NAMESPACE).has(name)) return;
    this.commitCreate(NAMESPACE, {
      metadata: { name, labels: { 'kubernetes.io/metadata.name': name } },
      spec: { finalizers: ['kubernetes'] },
      status: { phase: 'Active' },
    });
  }

  // -------------------------------------------------------------------------------------------

  private checkPreconditions(def: ResourceDef, current: KubeObject, pre: Preconditions): void {
    const name = current.metadata.name ?? '';
    if (pre.uid && pre.uid !== current.metadata.uid) {
      throw errors.conflict(
        def,
        name,
        `Precondition failed: UID in precondition: ${pre.uid}, UID in object meta: ${current.metadata.uid}`,
      );
    }
    if (pre.resourceVersion && pre.resourceVersion !== current.metadata.resourceVersion) {
      throw errors.conflict(def, name);
    }
  }

  private commitCreate(def: ResourceDef, obj: KubeObject): KubeObject {
    obj.apiVersion = apiVersionOf(def);
    obj.kind = def.kind;
    obj.metadata.uid ??= randomUUID();
    obj.metadata.creationTimestamp ??= rfc3339(this.opts.now());
    obj.metadata.generation ??= 1;
    if (def === NAMESPACE)
      obj.metadata.labels = { ...obj.metadata.labels, 'kubernetes.io/metadata.name': obj.metadata.name! };
    return this.commit(def, 'ADDED', obj, undefined);
  }

  private commitUpdate(def: ResourceDef, next: KubeObject, prev: KubeObject): KubeObject {
    const obj = clone(next);
    obj.apiVersion = apiVersionOf(def);
    obj.kind = def.kind;
    // System-owned metadata survives an update whatever the client sent.
    for (const f of ['uid', 'creationTimestamp', 'deletionTimestamp'] as const) {
      if (prev.metadata[f] !== undefined) obj.metadata[f] = prev.metadata[f];
    }
    obj.metadata.generation =
      (prev.metadata.generation ?? 1) + (deepEqual(obj['spec'], prev['spec']) ? 0 : 1);
    obj.metadata.resourceVersion = prev.metadata.resourceVersion;
    // The storage layer skips writes that change nothing: no new resourceVersion, no watch event.
    if (deepEqual(obj, prev)) return clone(prev);
    return this.commit(def, 'MODIFIED', obj, prev);
  }

  private commitDelete(def: ResourceDef, prev: KubeObject): KubeObject {
    if (def === NAMESPACE) {
      // The namespace controller's cascade, done at once instead of through a Terminating phase.
      for (const [d, table] of this.objects) {
        if (!d.namespaced) continue;
        for (const o of [...table.values()])
          if (o.metadata.namespace === prev.metadata.name) this.commitDelete(d, o);
      }
    }
    return this.commit(def, 'DELETED', clone(prev), prev);
  }

  private commit(
    def: ResourceDef,
    type: ChangeType,
    obj: KubeObject,
    prev: KubeObject | undefined,
  ): KubeObject {
    const rv = ++this.rv;
    obj.metadata.resourceVersion = String(rv);
    const key = keyOf(def, obj.metadata.namespace, obj.metadata.name ?? '');
    if (type === 'DELETED') this.table(def).delete(key);
    else this.table(def).set(key, obj);
    const change: Change = { def, type, rv, object: obj, prev };
    const h = this.history(def);
    h.changes.push(change);
    while (h.changes.length > this.opts.historySize) h.horizon = h.changes.shift()!.rv;
    for (const fn of [...this.listeners]) fn(change);
    return clone(obj);
  }

  private table(def: ResourceDef): Map<string, KubeObject> {
    let t = this.objects.get(def);
    if (!t) this.objects.set(def, (t = new Map()));
    return t;
  }

  private history(def: ResourceDef): History {
    let h = this.histories.get(def);
    if (!h) this.histories.set(def, (h = { changes: [], horizon: this.horizonFloor }));
    return h;
  }
}
