// The CLI's command line, parsed into a typed command. Pure: no I/O, no Kubernetes client. Every mistake a
// person can make here becomes a CliError whose message is a sentence, never a stack trace.
import { parseArgs } from 'node:util';
import { QuantityError, parseCpuMillicores, parseMemoryBytes } from '../../agent/resize/quantity.ts';
import { ResizableResources, type ResizableResource } from '../../agent/resize/vocabulary.ts';
import { CliError } from './errors.ts';

/** Quantity strings as the user wrote them, checked to parse; the request carries them unchanged. */
export type QuantityList = Partial<Record<ResizableResource, string>>;

export interface Connection {
  kubeconfig: string | undefined;
  context: string | undefined;
  /** undefined: the current context's namespace, else "default" (as kubectl). */
  namespace: string | undefined;
}

export interface ResizeCommand extends Connection {
  command: 'resize';
  pod: string;
  container: string | undefined;
  requests: QuantityList;
  limits: QuantityList;
  wait: boolean;
  timeoutMs: number;
}

export interface StatusCommand extends Connection {
  command: 'status';
  /** undefined: every pod of the namespace (or of every namespace with -A) that resizelet knows about. */
  pod: string | undefined;
  allNamespaces: boolean;
}

export type CliCommand = ResizeCommand | StatusCommand | { command: 'help' };

export const DEFAULT_TIMEOUT_MS = 60_000;

const connectionOptions = {
  namespace: { type: 'string', short: 'n' },
  kubeconfig: { type: 'string' },
  context: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

const resizeOptions = {
  ...connectionOptions,
  container: { type: 'string', short: 'c' },
  requests: { type: 'string' },
  limits: { type: 'string' },
  wait: { type: 'boolean', short: 'w' },
  timeout: { type: 'string' },
} as const;

const statusOptions = {
  ...connectionOptions,
  'all-namespaces': { type: 'boolean', short: 'A' },
} as const;

/** Node's parseArgs messages name the problem but read like an API; say it the way a person would. */
function parseOrExplain<T>(parse: () => T, command: string): T {
  try {
    return parse();
  } catch (err) {
    const e = err as { code?: string; message: string };
    const flag = /'([^']+)'/.exec(e.message)?.[1] ?? '';
    switch (e.code) {
      case 'ERR_PARSE_ARGS_UNKNOWN_OPTION':
        throw new CliError(`"${command}" has no option ${flag}; see "resizelet ${command} --help"`);
      case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE':
        throw new CliError(`option ${flag.split(' ')[0]} needs a value`);
      case 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL':
        throw new CliError(`unexpected argument ${flag}; "${command}" takes one pod name`);
      default:
        throw new CliError(e.message);
    }
  }
}

function connection(values: { namespace?: string; kubeconfig?: string; context?: string }): Connection {
  return { kubeconfig: values.kubeconfig, context: values.context, namespace: values.namespace };
}

/**
 * "cpu=500m,memory=256Mi" -> { cpu: '500m', memory: '256Mi' }, each value checked with the same parser the
 * agent uses, so a malformed quantity is refused here, before anything is written.
 */
export function parseQuantityList(text: string, flag: string): QuantityList {
  const out: QuantityList = {};
  if (text.trim() === '') throw new CliError(`${flag} is empty; give e.g. cpu=500m,memory=256Mi`);
  for (const part of text.split(',')) {
    const eq = part.indexOf('=');
    if (eq < 0) {
      throw new CliError(`${flag}: "${part}" is not NAME=QUANTITY (e.g. cpu=500m or memory=256Mi)`);
    }
    const name = part.slice(0, eq).trim();
    const value = part.slice(eq + 1);
    if (!(ResizableResources as readonly string[]).includes(name)) {
      throw new CliError(`${flag}: only cpu and memory can be resized in place, not ${JSON.stringify(name)}`);
    }
    const resource = name as ResizableResource;
    if (out[resource] !== undefined) throw new CliError(`${flag}: ${resource} is given twice`);
    try {
      if (resource === 'cpu') parseCpuMillicores(value);
      else parseMemoryBytes(value);
    } catch (err) {
      if (err instanceof QuantityError) throw new CliError(`${flag} ${resource}: ${err.message}`);
      throw err;
    }
    out[resource] = value;
  }
  return out;
}

/** "60s", "2m", "500ms", "1h". A bare number is refused: seconds or milliseconds would be a guess. */
export function parseTimeout(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(text.trim());
  if (!m) {
    throw new CliError(`--timeout: ${JSON.stringify(text)} is not a duration; write e.g. 60s, 2m or 500ms`);
  }
  const factor = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as 'ms' | 's' | 'm' | 'h'];
  const ms = Math.round(Number(m[1]) * factor);
  if (ms <= 0) throw new CliError('--timeout must be longer than zero');
  return ms;
}

function onePod(positionals: string[], command: string): string | undefined {
  if (positionals.length > 1) {
    throw new CliError(
      `"${command}" takes one pod name, got ${positionals.length}: ${positionals.join(', ')}`,
    );
  }
  const pod = positionals[0];
  if (pod !== undefined && pod.includes('/')) {
    throw new CliError(`"${pod}" is not a pod name; give the namespace with -n, e.g. -n shop web`);
  }
  return pod;
}

export function parseCli(argv: readonly string[]): CliCommand {
  const [command, ...rest] = argv;
  if (command === undefined || command === 'help' || command === '--help' || command === '-h') {
    return { command: 'help' };
  }
  if (command === 'resize') {
    const { values, positionals } = parseOrExplain(
      () => parseArgs({ args: rest, options: resizeOptions, allowPositionals: true, strict: true }),
      'resize',
    );
    if (values.help) return { command: 'help' };
    const pod = onePod(positionals, 'resize');
    if (pod === undefined) throw new CliError('which pod? usage: resizelet resize POD [-n NAMESPACE] ...');
    if (values.requests === undefined && values.limits === undefined) {
      throw new CliError('nothing to change: give --requests and/or --limits (e.g. --limits cpu=1)');
    }
    if (values.timeout !== undefined && !values.wait) {
      throw new CliError('--timeout only applies with --wait');
    }
    return {
      command: 'resize',
      ...connection(values),
      pod,
      container: values.container,
      requests: values.requests === undefined ? {} : parseQuantityList(values.requests, '--requests'),
      limits: values.limits === undefined ? {} : parseQuantityList(values.limits, '--limits'),
      wait: values.wait ?? false,
      timeoutMs: values.timeout === undefined ? DEFAULT_TIMEOUT_MS : parseTimeout(values.timeout),
    };
  }
  if (command === 'status') {
    const { values, positionals } = parseOrExplain(
      () => parseArgs({ args: rest, options: statusOptions, allowPositionals: true, strict: true }),
      'status',
    );
    if (values.help) return { command: 'help' };
    const pod = onePod(positionals, 'status');
    const allNamespaces = values['all-namespaces'] ?? false;
    if (allNamespaces && pod !== undefined) {
      throw new CliError('give either a pod name or -A (every namespace), not both');
    }
    if (allNamespaces && values.namespace !== undefined) {
      throw new CliError('give either -n NAMESPACE or -A (every namespace), not both');
    }
    return { command: 'status', ...connection(values), pod, allNamespaces };
  }
  throw new CliError(`unknown command "${command}"; the commands are resize, status and agent`);
}
