/** Run the real CLI (`src/cli/main.ts`) in a child process, as a user would. */
import { spawn, type ChildProcess } from 'node:child_process';

const ROOT = new URL('../..', import.meta.url).pathname;

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Node 24 (vitest runs on it) with tsx, so no build step is needed. */
export function cliArgs(args: string[]): [string, string[]] {
  return [process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args]];
}

/** Run the CLI with `args`, in this process's environment or in `env`. */
export function runCli(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<CliResult> {
  const [cmd, argv] = cliArgs(args);
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, argv, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

export interface StartedProcess {
  child: ChildProcess;
  match: RegExpMatchArray;
  output: () => string;
  /**
   * SIGTERM to the whole process group, then wait for the command to exit: `npm start` runs
   * a shell and node, and killing npm alone leaves the server running as an orphan.
   */
  stop(): Promise<void>;
}

/** Start a long-running command in its own process group and resolve once its output matches `ready`. */
export function startProcess(cmd: string, args: string[], ready: RegExp, env: NodeJS.ProcessEnv = process.env): Promise<StartedProcess> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    const stop = async () => {
      try {
        process.kill(-child.pid!, 'SIGTERM');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
      }
      await exited;
    };
    let out = '';
    const onData = (d: Buffer) => {
      out += d;
      const m = out.match(ready);
      if (m) resolve({ child, match: m, output: () => out, stop });
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.on('error', reject);
    child.on('close', (code) => reject(new Error(`${cmd} ${args.join(' ')} exited with ${code} before it was ready:\n${out}`)));
  });
}

export { ROOT };
