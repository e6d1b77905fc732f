// `resizelet resize` and `resizelet status`: parse, talk to the API server, print. Everything printed is
// built by format.ts; every failure leaves as a sentence and an exit code (errors.ts), never a stack.
import type * as k8s from '@kubernetes/client-node';
import { parseCli, type ResizeCommand, type StatusCommand } from './args.ts';
import { CliError, ExitCodes, type ExitCode } from './errors.ts';
import { formatAllocations, knowsResizelet, statusTable } from './format.ts';
import { createPodApi, explain, loadTarget, statusOf, type PodApi, type KubeTarget } from './kube.ts';
import { chooseContainer, describeQuantities, planResize } from './request.ts';
import { CLI_USAGE } from './usage.ts';
import { waitForAnswer } from './wait.ts';

export interface CliIo {
  stdout(text: string): void;
  stderr(text: string): void;
  env: Record<string, string | undefined>;
  now(): number;
  /** How the API is reached; tests may hand in a client for an in-process fake server. */
  connect?(target: KubeTarget): PodApi;
}

const MAX_CONFLICT_RETRIES = 3;

export async function runCli(argv: readonly string[], io: CliIo): Promise<ExitCode> {
  try {
    const cmd = parseCli(argv);
    if (cmd.command === 'help') {
      io.stdout(CLI_USAGE);
      return ExitCodes.ok;
    }
    const target = loadTarget(cmd, io.env);
    const api = (io.connect ?? createPodApi)(target);
    return cmd.command === 'resize' ? await resize(cmd, api, io) : await status(cmd, api, io);
  } catch (err) {
    if (err instanceof CliError) {
      io.stderr(`resizelet: ${err.message}\n`);
      return err.exitCode;
    }
    // A bug of ours: still a sentence, with enough to report it.
    io.stderr(`resizelet: unexpected error: ${(err as Error)?.message ?? String(err)}\n`);
    return ExitCodes.failed;
  }
}

async function readPod(api: PodApi, namespace: string, name: string): Promise<k8s.V1Pod> {
  try {
    return await api.get(namespace, name);
  } catch (err) {
    if (statusOf(err) === 404) {
      throw new CliError(`pod "${name}" not found in namespace "${namespace}"`);
    }
    throw new CliError(explain(err, `read pod ${namespace}/${name}`, api.target));
  }
}

function refuseFinished(pod: k8s.V1Pod, ref: string): void {
  const phase = pod.status?.phase;
  if (phase === 'Succeeded' || phase === 'Failed') {
    throw new CliError(`pod ${ref} has finished (phase ${phase}); there is nothing running to resize`);
  }
  if (!pod.spec?.nodeName) {
    throw new CliError(`pod ${ref} is not scheduled to a node yet; no agent can resize it until it is`);
  }
  if (pod.metadata?.deletionTimestamp) throw new CliError(`pod ${ref} is being deleted`);
}

async function resize(cmd: ResizeCommand, api: PodApi, io: CliIo): Promise<ExitCode> {
  const namespace = api.target.namespace;
  const ref = `${namespace}/${cmd.pod}`;
  for (let attempt = 0; ; attempt++) {
    const pod = await readPod(api, namespace, cmd.pod);
    refuseFinished(pod, ref);
    const container = chooseContainer(pod, cmd.container);
    const plan = planResize({
      pod,
      container,
      requests: cmd.requests,
      limits: cmd.limits,
      now: new Date(io.now()),
    });
    if (plan.alreadyAnswered) {
      const s = plan.alreadyAnswered;
      if (s.resizeStatus === 'Rejected') {
        throw new CliError(`pod ${ref}: this exact request was already rejected: ${s.message ?? ''}`);
      }
      io.stdout(
        `pod ${ref}: this exact request was already completed (${s.lastTransitionTime}); nothing to write\n` +
          `allocated ${formatAllocations(s.allocatedResources)}\n`,
      );
      return ExitCodes.ok;
    }
    const startedAt = io.now();
    let patched: k8s.V1Pod;
    try {
      patched = await api.patch(namespace, cmd.pod, plan.patch);
    } catch (err) {
      // 409: the pod changed between our read and our write (often the agent publishing a status);
      // read it again so the request is built on what is there now.
      if (statusOf(err) === 409 && attempt < MAX_CONFLICT_RETRIES) continue;
      if (statusOf(err) === 404) throw new CliError(`pod ${ref} was deleted before the request was written`);
      throw new CliError(explain(err, `patch pod ${ref}`, api.target));
    }
    const what = [
      describeQuantities(cmd.requests) && `requests ${describeQuantities(cmd.requests)}`,
      describeQuantities(cmd.limits) && `limits ${describeQuantities(cmd.limits)}`,
    ]
      .filter(Boolean)
      .join(', ');
    io.stdout(`resize requested: pod ${ref}, container ${container}: ${what}\n`);
    if (plan.kept.length > 0) {
      io.stdout(`kept from the earlier request, not yet answered: ${plan.kept.join('; ')}\n`);
    }
    const node = pod.spec?.nodeName ?? '';
    if (!cmd.wait) {
      io.stdout(
        `status Proposed: the resizelet agent on node ${node} will answer; follow it with: resizelet status ${cmd.pod} -n ${namespace}\n`,
      );
      return ExitCodes.ok;
    }
    const outcome = await waitForAnswer({
      api,
      namespace,
      name: cmd.pod,
      hash: plan.hash,
      patched,
      timeoutMs: cmd.timeoutMs,
      startedAt,
      now: io.now,
      write: io.stdout,
    });
    if (outcome.kind === 'Completed') return ExitCodes.ok;
    if (outcome.kind === 'Rejected') {
      io.stderr(`resizelet: resize rejected: ${outcome.status.message ?? '(no reason given)'}\n`);
      return ExitCodes.failed;
    }
    const seconds = `${Math.round(cmd.timeoutMs / 100) / 10}s`;
    const last = outcome.last;
    let why: string;
    if (last && last.resizeStatus !== 'Proposed') {
      why = `the last status was ${last.resizeStatus}${last.message ? `: ${last.message}` : ''}`;
    } else {
      why = `no agent answered; is resizelet running on node ${node}? (kubectl -n resizelet get pods --field-selector spec.nodeName=${node})`;
    }
    const err = outcome.lastError
      ? `; the watch also failed: ${explain(outcome.lastError, `watch pod ${ref}`, api.target)}`
      : '';
    io.stderr(
      `resizelet: timed out after ${seconds} waiting for the resize of pod ${ref}: ${why}${err}. The request stays in place and the agent will still act on it.\n`,
    );
    return ExitCodes.timedOut;
  }
}

async function status(cmd: StatusCommand, api: PodApi, io: CliIo): Promise<ExitCode> {
  const now = new Date(io.now());
  if (cmd.pod !== undefined) {
    const pod = await readPod(api, api.target.namespace, cmd.pod);
    io.stdout(statusTable([pod], { namespaces: false, now }));
    return ExitCodes.ok;
  }
  const namespace = cmd.allNamespaces ? undefined : api.target.namespace;
  let pods: k8s.V1Pod[];
  try {
    pods = await api.list(namespace);
  } catch (err) {
    const where = namespace === undefined ? 'in any namespace' : `in namespace ${namespace}`;
    throw new CliError(explain(err, `list pods ${where}`, api.target));
  }
  const shown = pods
    .filter(knowsResizelet)
    .sort((a, b) =>
      `${a.metadata?.namespace}/${a.metadata?.name}`.localeCompare(
        `${b.metadata?.namespace}/${b.metadata?.name}`,
      ),
    );
  if (shown.length === 0) {
    io.stdout(
      namespace === undefined
        ? 'no pod in any namespace has a resizelet request\n'
        : `no pod in namespace ${namespace} has a resizelet request\n`,
    );
    return ExitCodes.ok;
  }
  io.stdout(statusTable(shown, { namespaces: cmd.allNamespaces, now }));
  return ExitCodes.ok;
}
