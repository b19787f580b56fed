/**
 * Server configuration, parsed once from flags and environment and passed down. Every flag
 * `--some-flag` can also be set as `POLICYGUARD_SOME_FLAG`; a flag wins over the environment.
 * Nothing else in the code reads `process.env`.
 */
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { TrustLevelSchema } from './api/schemas.js';

const Bool = z.union([z.boolean(), z.enum(['true', 'false', '1', '0']).transform((v) => v === 'true' || v === '1')]);
const Port = z.coerce.number().int().min(0).max(65535);
const PositiveInt = z.coerce.number().int().min(0);

export const ServeConfigSchema = z
  .object({
    standalone: Bool.default(false),
    configDir: z.string().min(1).optional(),
    dataDir: z.string().min(1).optional(),
    kubeconfig: z.string().min(1).optional(),
    host: z.string().min(1).default('127.0.0.1'),
    port: Port.default(8000),
    auth: z.enum(['none']).default('none'),
    logLevel: z.enum(['debug', 'info', 'warn', 'error']).default('info'),
    defaultDecision: z.enum(['allow', 'deny']).default('allow'),
    unknownAgentTrust: TrustLevelSchema.default('low'),
    autoRegister: Bool.default(true),
    autoRegisterLimit: PositiveInt.default(1000),
    bodyLimit: z.string().regex(/^\d+(b|kb|mb)$/i, 'use a size like 512kb or 1mb').default('1mb'),
  })
  .superRefine((c, ctx) => {
    if (c.standalone) {
      if (!c.configDir) ctx.addIssue({ code: 'custom', path: ['configDir'], message: '--standalone needs --config-dir, a folder of GuardAgent/GuardPolicy YAML' });
      if (!c.dataDir) ctx.addIssue({ code: 'custom', path: ['dataDir'], message: '--standalone needs --data-dir, where audit logs and written objects go' });
    } else {
      ctx.addIssue({
        code: 'custom',
        path: ['standalone'],
        message: 'kubernetes mode is not available in this build yet; run with --standalone --config-dir DIR --data-dir DIR',
      });
    }
  });
export type ServeConfig = z.infer<typeof ServeConfigSchema>;

const SERVE_FLAGS = {
  standalone: { type: 'boolean' },
  'config-dir': { type: 'string' },
  'data-dir': { type: 'string' },
  kubeconfig: { type: 'string' },
  host: { type: 'string' },
  port: { type: 'string' },
  auth: { type: 'string' },
  'log-level': { type: 'string' },
  'default-decision': { type: 'string' },
  'unknown-agent-trust': { type: 'string' },
  'auto-register': { type: 'string' },
  'auto-register-limit': { type: 'string' },
  'body-limit': { type: 'string' },
} as const;

export class ConfigError extends Error {
  override name = 'ConfigError';
}

const camel = (flag: string) => flag.replace(/-([a-z])/g, (_m, c: string) => c.toUpperCase());
const envName = (flag: string) => `POLICYGUARD_${flag.toUpperCase().replace(/-/g, '_')}`;

/**
 * Parse `serve` flags (argv after the command) with environment fallbacks.
 *
 * @example parseServeConfig(['--standalone', '--config-dir', 'config-samples', '--data-dir', '/tmp/pg'], {})
 */
export function parseServeConfig(argv: string[], env: Record<string, string | undefined>): ServeConfig {
  let values: Record<string, unknown>;
  try {
    ({ values } = parseArgs({ args: argv, options: SERVE_FLAGS, allowPositionals: false, strict: true }));
  } catch (err) {
    throw new ConfigError(`${(err as Error).message}\nRun \`policyguard help\` for the flags.`);
  }
  const raw: Record<string, unknown> = {};
  for (const flag of Object.keys(SERVE_FLAGS)) {
    const v = values[flag] ?? env[envName(flag)];
    if (v !== undefined) raw[camel(flag)] = v;
  }
  const parsed = ServeConfigSchema.safeParse(raw);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => {
      const key = String(i.path[0] ?? '');
      const flag = key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
      return `  --${flag} (${envName(flag)}): ${i.message}`;
    });
    throw new ConfigError(`invalid configuration:\n${lines.join('\n')}`);
  }
  return parsed.data;
}
