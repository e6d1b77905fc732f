// The agent's whole use of the Kubernetes API, behind one small port so the reconciler can be tested with
// an in-memory double and deploy/'s RBAC can be checked against this list. Every call here must be granted
// by deploy/rbac.yaml, and nothing more.
import * as k8s from '@kubernetes/client-node';
import type { PodLike } from '../resize/pod.ts';
import { makeApiClient } from './transport.ts';

export interface NodeInfo {
  name: string;
  allocatable: Record<string, string>;
  capacity: Record<string, string>;
}

export interface PodEvent {
  reason: string;
  message: string;
  type: 'Normal' | 'Warning';
}

export interface KubePort {
  /** Merge patch of annotations only (`null` removes a key): never touches spec or status. */
  patchPodAnnotations(
    namespace: string,
    name: string,
    annotations: Record<string, string | null>,
  ): Promise<void>;
  createPodEvent(pod: PodLike, event: PodEvent): Promise<void>;
  readNode(name: string): Promise<NodeInfo>;
}

/** The RBAC rules the calls above need; deploy/ is tested against this list. */
export const API_CALLS = [
  // No pods get: single pods are read from the informer's cache, never fetched.
  { resource: 'pods', verbs: ['list', 'watch', 'patch'] },
  { resource: 'nodes', verbs: ['get'] },
  { resource: 'events', verbs: ['create'] },
  // Namespace rules (agent/kube/namespace-state.ts): one cluster-wide informer each, so judging stays
  // synchronous and survives an API outage on the last known state. The namespace's pods on other nodes are
  // a `list pods` per namespace, already granted above.
  { resource: 'namespaces', verbs: ['list', 'watch'] },
  { resource: 'resourcequotas', verbs: ['list', 'watch'] },
  { resource: 'limitranges', verbs: ['list', 'watch'] },
] as const;

export function loadKubeConfig(kubeconfigPath: string | undefined): k8s.KubeConfig {
  const kc = new k8s.KubeConfig();
  if (kubeconfigPath) kc.loadFromFile(kubeconfigPath);
  else kc.loadFromCluster();
  return withSharedConnections(kc);
}

/**
 * client-node 2.0 builds a new undici Agent, i.e. a new connection pool, inside applySecurityAuthentication,
 * which runs for every API call: each status patch and Event opened a new TCP connection (and, against a
 * real API server, did a TLS handshake). Keep the first pool for the process so calls reuse kept-alive
 * connections, as client-go's shared transport does. Credentials are unaffected: the token header is still
 * applied per call (a rotated service-account token is picked up); the CA and client certificate are those
 * read at the first call, as client-go's in-cluster config reads them once at start.
 */
export function withSharedConnections(kc: k8s.KubeConfig): k8s.KubeConfig {
  const applyPerCall = kc.applySecurityAuthentication.bind(kc);
  let shared: ReturnType<k8s.RequestContext['getDispatcher']>;
  kc.applySecurityAuthentication = async (context: k8s.RequestContext): Promise<void> => {
    await applyPerCall(context);
    const created = context.getDispatcher();
    if (created === undefined) return;
    shared ??= created;
    context.setDispatcher(shared);
  };
  return kc;
}

const mergePatch = k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch);

export function createKubePort(kc: k8s.KubeConfig, opts: { component: string; host: string }): KubePort {
  const core = makeApiClient(kc, k8s.CoreV1Api);
  let seq = 0;
  return {
    async patchPodAnnotations(namespace, name, annotations) {
      await core.patchNamespacedPod({ name, namespace, body: { metadata: { annotations } } }, mergePatch);
    },
    async createPodEvent(pod, event) {
      const now = new Date();
      const name = pod.metadata?.name ?? '';
      const namespace = pod.metadata?.namespace ?? 'default';
      // Event names only need to be unique; the kubelet uses <object>.<hex timestamp> too.
      const eventName = `${name}.${now.getTime().toString(16)}${(seq++ % 4096).toString(16).padStart(3, '0')}`;
      await core.createNamespacedEvent({
        namespace,
        body: {
          metadata: { name: eventName, namespace },
          involvedObject: {
            apiVersion: 'v1',
            kind: 'Pod',
            name,
            namespace,
            uid: pod.metadata?.uid,
            resourceVersion: pod.metadata?.resourceVersion,
          },
          reason: event.reason,
          message: event.message,
          type: event.type,
          source: { component: opts.component, host: opts.host },
          reportingComponent: opts.component,
          reportingInstance: opts.host,
          firstTimestamp: now,
          lastTimestamp: now,
          count: 1,
        },
      });
    },
    async readNode(name) {
      const node = await core.readNode({ name });
      return {
        name,
        allocatable: node.status?.allocatable ?? {},
        capacity: node.status?.capacity ?? {},
      };
    },
  };
}

/** An API error's HTTP status, if it has one (client-node throws ApiException with `code`). */
export function httpStatusOf(err: unknown): number | undefined {
  if (
    err &&
    typeof err === 'object' &&
    'code' in err &&
    typeof (err as { code: unknown }).code === 'number'
  ) {
    return (err as { code: number }).code;
  }
  return undefined;
}
