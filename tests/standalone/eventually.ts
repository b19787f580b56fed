/**
 * Poll until a condition holds. Not a timing assertion: the bound only turns "never" into a
 * failure with the last value seen.
 */
export async function eventually<T>(fn: () => Promise<T>, ok: (v: T) => boolean, what: string, boundMs = 15_000): Promise<T> {
  const deadline = Date.now() + boundMs;
  let last: T | undefined;
  let lastError: unknown;
  for (;;) {
    try {
      last = await fn();
      if (ok(last)) return last;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`gave up waiting for ${what}; last value ${JSON.stringify(last)}${lastError ? `; last error ${String(lastError)}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}
