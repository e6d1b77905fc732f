// deploy/rbac.yaml grants every API call the agent makes and nothing else. The list of calls is not
// written by hand: the agent runs as a real process against the fake API server (which records the RBAC
// verb and resource of every request) through a completed resize, a rejected one and a restart, and the
// ClusterRole must allow each recorded request and grant nothing that went unused. agent/kube/api.ts's
// API_CALLS is checked too: it must declare every call made, and the role may grant nothing it does not
// declare.
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { API_CALLS } from '../../agent/kube/api.ts';
import { startFakeApiServer, type FakeApiServer, type Pod } from '../fakes/apiserver.ts';
import type { RbacAttributes } from '../fakes/kube/routes.ts';
import {
  runningContainerStatus,
  sandboxAgentArgs,
  startAgentProcess,
  statusOf,
  waitFor,
  withAnnotations,
  type AgentProcess,
} from '../agent/support.ts';
import {
  createRealSandbox,
  newContainerId,
  newPodUid,
  realCgroupsAvailable,
  type RealSandbox,
} from '../support/real-cgroup.ts';

const repo = fileURLToPath(new URL('../../', import.meta.url));
const yaml = createRequire(fileURLToPath(import.meta.resolve('@kubernetes/client-node')))('js-yaml') as {
  loadAll(text: string): unknown[];
};

interface Rule {
  apiGroups?: string[];
  resources?: string[];
  verbs: string[];
  resourceNames?: string[];
  nonResourceURLs?: string[];
}

const docs = yaml.loadAll(readFileSync(join(repo, 'deploy/rbac.yaml'), 'utf8')) as Array<{
  kind: string;
  rules?: Rule[];
}>;
const rules = docs.find((d) => d.kind === 'ClusterRole')!.rules!;

/** "group|resource|verb" for every combination a rule grants (wildcards are refused outright below). */
const key = (group: string, resource: string, verb: string) => `${group}|${resource}|${verb}`;
const granted = new Set(
  rules.flatMap((r) =>
    (r.apiGroups ?? []).flatMap((g) =>
      (r.resources ?? []).flatMap((res) => r.verbs.map((v) => key(g, res, v))),
    ),
  ),
);

/** What the API server's RBAC authorizer decides for one request (rbac/v1 PolicyRule matching). */
function allows(attrs: RbacAttributes): boolean {
  return rules.some((r) => {
    const verb = r.verbs.includes('*') || r.verbs.includes(attrs.verb);
    if ('nonResourceURL' in attrs) {
      return verb && (r.nonResourceURLs ?? []).some((u) => u === attrs.nonResourceURL || u === '*');
    }
    const group = (r.apiGroups ?? []).some((g) => g === '*' || g === attrs.apiGroup);
    const resource = (r.resources ?? []).some((x) => x === '*' || x === attrs.resource);
    const name =
      !r.resourceNames?.length || (attrs.name !== undefined && r.resourceNames.includes(attrs.name));
    return verb && group && resource && name;
  });
}

describe('the ClusterRole, read statically', () => {
  it('uses no wildcards and no non-resource URLs', () => {
    for (const r of rules) {
      expect([...(r.apiGroups ?? []), ...(r.resources ?? []), ...r.verbs]).not.toContain('*');
      expect(r.nonResourceURLs).toBeUndefined();
    }
  });

  it("grants nothing agent/kube/api.ts's API_CALLS does not declare", () => {
    const declared = new Set(API_CALLS.flatMap((c) => c.verbs.map((v) => key('', c.resource, v))));
    expect([...granted].filter((g) => !declared.has(g))).toEqual([]);
  });
});

const available = realCgroupsAvailable();
if (!available.ok) console.warn(`skipping the agent run that derives the RBAC rules: ${available.reason}`);

describe.skipIf(!available.ok)('the ClusterRole against the calls a running agent makes', () => {
  const NODE = 'rbac-node';
  const NS = 'shop';
  let sandbox: RealSandbox;
  let api: FakeApiServer;
  let agent: AgentProcess | undefined;
  let dir: string;

  const agentArgs = (): string[] => [
    ...sandboxAgentArgs({ nodeName: NODE, dir, podsRoot: sandbox.layout.podsRoot }),
  ];

  const settled = (want: string) =>
    waitFor(want, () => {
      const s = statusOf(api, NS, 'web');
      return s?.resizeStatus === want ? s : undefined;
    });
  const request = (text: string) =>
    api.upsertPod(withAnnotations(api.getPod(NS, 'web')!, { 'resizelet.io/resize': text }));

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'resizelet-rbac-'));
    sandbox = await createRealSandbox();
    const uid = newPodUid();
    const podPath = await sandbox.makePod(uid, 'Burstable', { cpuShares: 102, cpuQuotaUs: 20_000 });
    const id = newContainerId();
    await sandbox.makeContainer(podPath, id, { cpuShares: 102, cpuQuotaUs: 20_000 });
    api = await startFakeApiServer({ namespaces: [NS] });
    api.upsertNode({
      metadata: { name: NODE },
      status: { allocatable: { cpu: '2', memory: '8Gi' }, capacity: { cpu: '2', memory: '8Gi' } },
    });
    const pod: Pod = {
      metadata: { name: 'web', namespace: NS, uid },
      spec: {
        nodeName: NODE,
        containers: [
          { name: 'app', image: 'x', resources: { requests: { cpu: '100m' }, limits: { cpu: '200m' } } },
        ],
      },
      status: {
        phase: 'Running',
        qosClass: 'Burstable',
        containerStatuses: [runningContainerStatus('app', id)],
      },
    };
    api.upsertPod(pod);
    await api.writeKubeconfig(join(dir, 'kubeconfig'));

    // A completed resize, a rejected one, then a restart that re-lists and re-reads the node.
    agent = startAgentProcess(agentArgs());
    await agent.waitForLog(/endpoint listening/);
    request('{"app":{"limits":{"cpu":"1"}}}');
    await settled('Completed');
    request('{"app":{"limits":{"nvidia.com/gpu":"1"}}}');
    await settled('Rejected');
    await waitFor(
      'the Rejected event',
      () => api.events().some((e) => (e as { reason?: string }).reason === 'ResizeRejected') || undefined,
    );
    await agent.kill('SIGTERM');
    const listsBefore = api.requests.filter((r) => r.rbac.verb === 'list').length;
    agent = startAgentProcess(agentArgs());
    await agent.waitForLog(/endpoint listening/);
    await waitFor('a new list and watch', () =>
      api.requests.filter((r) => r.rbac.verb === 'list').length > listsBefore && api.openWatchCount() > 0
        ? true
        : undefined,
    );
  }, 60_000);

  afterAll(async () => {
    await agent?.kill('SIGKILL');
    await api?.close();
    await sandbox?.cleanup();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const observed = () => api.requests.map((r) => r.rbac);
  const resourceKeys = () =>
    new Set(observed().flatMap((a) => ('resource' in a ? [key(a.apiGroup, a.resource, a.verb)] : [])));

  it('allows every request the agent made', () => {
    const denied = observed().filter((a) => !allows(a));
    expect(denied).toEqual([]);
  });

  it('grants nothing the agent did not use', () => {
    const used = resourceKeys();
    expect([...granted].filter((g) => !used.has(g))).toEqual([]);
  });

  it('is exactly the set of calls made', () => {
    expect([...granted].sort()).toEqual([...resourceKeys()].sort());
  });

  it("every call made is declared in agent/kube/api.ts's API_CALLS", () => {
    const declared = new Set(API_CALLS.flatMap((c) => c.verbs.map((v) => key('', c.resource, v))));
    expect([...resourceKeys()].filter((k) => !declared.has(k))).toEqual([]);
  });
});
