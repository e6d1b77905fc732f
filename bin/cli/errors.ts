// The CLI's one error type: a sentence for a person and the exit code that goes with it. Anything else
// that reaches the top is a bug, and is still reported as a sentence (see main.ts).

/** 0 done (Completed, or the request written); 1 refused, Rejected or any error; 2 --wait timed out. */
export const ExitCodes = { ok: 0, failed: 1, timedOut: 2 } as const;
export type ExitCode = (typeof ExitCodes)[keyof typeof ExitCodes];

export class CliError extends Error {
  override readonly name = 'CliError';
  readonly exitCode: ExitCode;

  constructor(message: string, exitCode: ExitCode = ExitCodes.failed) {
    super(message);
    this.exitCode = exitCode;
  }
}
