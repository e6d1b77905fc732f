// The command line, as tables: what parses into which command, and the sentence for each mistake.
import { describe, expect, it } from 'vitest';
import { DEFAULT_TIMEOUT_MS, parseCli, parseQuantityList, parseTimeout } from '../../bin/cli/args.ts';
import { CliError } from '../../bin/cli/errors.ts';

function refusal(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(CliError);
    return (err as Error).message;
  }
  throw new Error('expected a CliError');
}

describe('resize', () => {
  it('parses the issue example, flags before or after the pod', () => {
    const a = parseCli(['resize', 'web', '-n', 'shop', '-c', 'app', '--requests', 'cpu=500m,memory=256Mi']);
    const b = parseCli(['resize', '-n', 'shop', '--requests', 'cpu=500m,memory=256Mi', 'web', '-c', 'app']);
    expect(a).toEqual(b);
    expect(a).toMatchObject({
      command: 'resize',
      pod: 'web',
      namespace: 'shop',
      container: 'app',
      requests: { cpu: '500m', memory: '256Mi' },
      limits: {},
      wait: false,
      timeoutMs: DEFAULT_TIMEOUT_MS,
    });
  });

  it('keeps the quantities as written (the agent parses them again)', () => {
    const c = parseCli(['resize', 'web', '--limits', 'cpu=1,memory=0.5Gi', '--wait', '--timeout', '2m']);
    expect(c).toMatchObject({ limits: { cpu: '1', memory: '0.5Gi' }, wait: true, timeoutMs: 120_000 });
  });

  it('takes --kubeconfig and --context like kubectl', () => {
    const c = parseCli(['resize', 'web', '--limits', 'cpu=1', '--kubeconfig', '/k', '--context', 'prod']);
    expect(c).toMatchObject({ kubeconfig: '/k', context: 'prod', namespace: undefined });
  });

  it.each([
    [['resize', '--limits', 'cpu=1'], 'which pod? usage: resizelet resize POD [-n NAMESPACE] ...'],
    [['resize', 'web'], 'nothing to change: give --requests and/or --limits (e.g. --limits cpu=1)'],
    [['resize', 'web', 'api', '--limits', 'cpu=1'], '"resize" takes one pod name, got 2: web, api'],
    [
      ['resize', 'shop/web', '--limits', 'cpu=1'],
      '"shop/web" is not a pod name; give the namespace with -n, e.g. -n shop web',
    ],
    [['resize', 'web', '--limits', 'cpu=1', '--timeout', '5s'], '--timeout only applies with --wait'],
    [
      ['resize', 'web', '--limits', 'cpu=1', '--wait', '--timeout', '60'],
      '--timeout: "60" is not a duration; write e.g. 60s, 2m or 500ms',
    ],
    [
      ['resize', 'web', '--limits', 'cpu=1', '--wait', '--timeout', '0s'],
      '--timeout must be longer than zero',
    ],
    [['resize', 'web', '--cpu', '1'], '"resize" has no option --cpu; see "resizelet resize --help"'],
    [['resize', 'web', '--limits'], 'option --limits needs a value'],
    [
      ['resize', 'web', '--limits', 'gpu=1'],
      '--limits: only cpu and memory can be resized in place, not "gpu"',
    ],
    [
      ['resize', 'web', '--limits', 'cpu'],
      '--limits: "cpu" is not NAME=QUANTITY (e.g. cpu=500m or memory=256Mi)',
    ],
    [['resize', 'web', '--limits', 'cpu=1,cpu=2'], '--limits: cpu is given twice'],
    [
      ['resize', 'web', '--requests', 'cpu=1x'],
      '--requests cpu: "1x": unknown suffix "x" (known suffixes: n u m k M G T P E, Ki Mi Gi Ti Pi Ei, or an exponent such as e6)',
    ],
    [
      ['resize', 'web', '--requests', 'memory=256MB'],
      '--requests memory: "256MB": unknown suffix "MB" (did you mean "Mi" or "M"?)',
    ],
    [
      ['resize', 'web', '--limits', 'memory=-1Gi'],
      '--limits memory: "-1Gi": a memory amount cannot be negative',
    ],
    [['resize', 'web', '--limits', 'cpu='], '--limits cpu: "" is not a quantity: the string is empty'],
  ])('%j -> %s', (argv, message) => {
    expect(refusal(() => parseCli(argv))).toBe(message);
  });
});

describe('status', () => {
  it.each([
    [['status', 'web'], { pod: 'web', allNamespaces: false, namespace: undefined }],
    [['status', 'web', '-n', 'shop'], { pod: 'web', namespace: 'shop' }],
    [['status', '-A'], { pod: undefined, allNamespaces: true }],
    [['status', '--all-namespaces'], { pod: undefined, allNamespaces: true }],
    [['status'], { pod: undefined, allNamespaces: false }],
  ])('%j', (argv, want) => {
    expect(parseCli(argv)).toMatchObject({ command: 'status', ...want });
  });

  it.each([
    [['status', 'web', '-A'], 'give either a pod name or -A (every namespace), not both'],
    [['status', '-A', '-n', 'shop'], 'give either -n NAMESPACE or -A (every namespace), not both'],
    [['status', '--wait'], '"status" has no option --wait; see "resizelet status --help"'],
  ])('%j -> %s', (argv, message) => {
    expect(refusal(() => parseCli(argv))).toBe(message);
  });
});

describe('commands', () => {
  it.each([[[]], [['help']], [['--help']], [['-h']], [['resize', '--help']], [['status', '-h']]])(
    '%j is help',
    (argv) => {
      expect(parseCli(argv)).toEqual({ command: 'help' });
    },
  );

  it('names the commands for an unknown one', () => {
    expect(refusal(() => parseCli(['resise', 'web']))).toBe(
      'unknown command "resise"; the commands are resize, status and agent',
    );
  });
});

describe('building blocks', () => {
  it('quantity lists accept both resources and refuse an empty list', () => {
    expect(parseQuantityList('memory=1Gi,cpu=250m', '--limits')).toEqual({ memory: '1Gi', cpu: '250m' });
    expect(refusal(() => parseQuantityList('', '--limits'))).toBe(
      '--limits is empty; give e.g. cpu=500m,memory=256Mi',
    );
  });

  it.each([
    ['500ms', 500],
    ['60s', 60_000],
    ['1.5m', 90_000],
    ['1h', 3_600_000],
  ])('timeout %s = %i ms', (text, ms) => {
    expect(parseTimeout(text)).toBe(ms);
  });
});
