import { lstat, mkdir, rename } from 'node:fs/promises';
import { dirname } from 'node:path';
import { z } from 'zod';
import { appendDurably, readLinesBackward, repairTornTail, syncDirectory } from './jsonl.js';
import { canonicalJson, newId, redactSecrets, redactSecretText } from './record.js';
import { notRegularFile } from '../regular-file.js';

/** An incident: a line of the standalone incident log, or in kubernetes mode an entry of the audit log (audit-incidents.ts) plus an Event. */
export interface IncidentRecord {
  /** `inc_` + 12 hex. */
  incident_id: string;
  timestamp: string;
  type: string;
  severity: 'low' | 'medium' | 'high' | 'critical';
  description: string;
  agent_id: string | null;
  action_id?: string | null;
  evidence: Record<string, unknown>;
  recommended_action: string;
  status: 'open';
  resolution: null;
}

export type IncidentInput = Omit<IncidentRecord, 'incident_id' | 'timestamp' | 'status' | 'resolution'>;

export interface IncidentLog {
  /** Stores an incident durably (evidence redacted) and returns it as stored. */
  record(input: IncidentInput): Promise<IncidentRecord>;
  /** Incidents at or after `since`, newest first, at most {@link INCIDENT_LIST_LIMIT}. */
  list(since?: Date): Promise<IncidentRecord[]>;
}

/** `list` returns at most this many incidents, however large the file has grown. */
export const INCIDENT_LIST_LIMIT = 10_000;
/** Most bytes of incidents one list reads from the audit log (each holds at most 16 KiB of evidence and 8,192 characters of description). */
export const INCIDENT_LIST_MAX_BYTES = 32 * 1024 * 1024;

/**
 * The incident file is rotated once it reaches this size: it becomes `<name>.1.jsonl`
 * (replacing the one before) and a new file is started, so at most about twice this is on
 * disk. Every denied call records an incident, and one caller can make thousands a second:
 * unbounded, the file would fill the data dir and take the audit log, and every decision,
 * down with it.
 */
export const INCIDENT_FILE_MAX_BYTES = 32 * 1024 * 1024;

/** Where the rotated incident file goes: `incidents.jsonl` → `incidents.1.jsonl`. */
export const previousIncidentFile = (path: string): string => path.replace(/(\.jsonl)?$/, '.1.jsonl');

/** Tells a complete incident line from a torn or foreign one; tsc fails if it drifts from the type. */
const IncidentRecordSchema: z.ZodType<IncidentRecord> = z.object({
  incident_id: z.string(),
  timestamp: z.string(),
  type: z.string(),
  severity: z.enum(['low', 'medium', 'high', 'critical']),
  description: z.string(),
  agent_id: z.string().nullable(),
  action_id: z.string().nullable().optional(),
  evidence: z.record(z.string(), z.unknown()),
  recommended_action: z.string(),
  status: z.literal('open'),
  resolution: z.null(),
});

const isIncidentRecord = (value: unknown): boolean => IncidentRecordSchema.safeParse(value).success;

/**
 * Opens (or creates) the standalone incident log: one JSON incident per line, appended with
 * fdatasync, a last line torn by a crash repaired on open. `opts.log` receives repair and
 * corruption reports (default stderr).
 *
 * @example
 * const incidents = await openFileIncidentLog('/data/incidents.jsonl');
 * await incidents.record({ type: 'policy_violation', severity: 'medium', description: 'denied shell.exec',
 *   agent_id: 'agent-1', evidence: { target: 'shell.exec' }, recommended_action: 'review the agent' });
 * const lastHour = await incidents.list(new Date(Date.now() - 3_600_000));
 */
export async function openFileIncidentLog(
  path: string,
  opts: { log?: (msg: string) => void; maxBytes?: number } = {},
): Promise<IncidentLog> {
  const log = opts.log ?? ((msg: string) => console.error(`[incidents] ${msg}`));
  const maxBytes = opts.maxBytes ?? INCIDENT_FILE_MAX_BYTES;
  const previous = previousIncidentFile(path);
  await mkdir(dirname(path), { recursive: true });
  // Looked at before they are opened: reading a FIFO would hang, a folder fails with a bare EISDIR.
  for (const file of [path, previous]) {
    const odd = await lstat(file).then(notRegularFile, (error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return undefined;
      throw error;
    });
    if (odd) throw new Error(`the incident log ${file} ${odd}: PolicyGuard writes only a regular file there, so it was put there; move it away`);
  }
  await repairTornTail(path, isIncidentRecord, log);
  // Group commit: incidents recorded while a write is in flight go out together in the next
  // one (one append + fdatasync), in call order. One fsync per incident, one after the other,
  // would cap denials at the disk's fsync rate and make each wait for all queued before it.
  let pending: Array<{ line: string; stored: () => void; failed: (err: unknown) => void }> = [];
  let writes: Promise<unknown> = Promise.resolve();
  const writeBatch = async (): Promise<void> => {
    const batch = pending;
    pending = [];
    let size: number;
    try {
      size = await appendDurably(path, batch.map((b) => `${b.line}\n`).join(''));
      for (const b of batch) b.stored();
    } catch (err) {
      for (const b of batch) b.failed(err); // appendDurably undid the partial write: none is stored
      return;
    }
    if (size < maxBytes) return;
    try {
      await rename(path, previous);
      await syncDirectory(dirname(path));
    } catch (err) {
      // The incidents are stored; the next batch tries again.
      log(`could not rotate ${path} to ${previous}: ${String(err)}`);
    }
  };

  return {
    record(input) {
      const incident: IncidentRecord = {
        incident_id: newId('inc_'),
        timestamp: new Date().toISOString(),
        type: input.type,
        severity: input.severity,
        description: redactSecretText(input.description),
        agent_id: input.agent_id,
        ...(input.action_id === undefined ? {} : { action_id: input.action_id }),
        evidence: redactSecrets(input.evidence),
        recommended_action: redactSecretText(input.recommended_action),
        status: 'open',
        resolution: null,
      };
      const line = canonicalJson(incident);
      const stored = new Promise<void>((resolve, reject) => pending.push({ line, stored: resolve, failed: reject }));
      if (pending.length === 1) writes = writes.then(writeBatch);
      // Return what was stored: the JSON round trip drops undefined members, turns Dates into strings.
      return stored.then(() => JSON.parse(line) as IncidentRecord);
    },

    async list(since) {
      // Incidents whose record() was called before list() are included.
      await writes;
      const found: IncidentRecord[] = [];
      // The current file, then the one rotated before it.
      for (const file of [path, previous]) {
        let unreadable = 0;
        let older = false;
        for await (const line of readLinesBackward(file)) {
          const incident = parseIncidentLine(line.text);
          if (!incident) {
            unreadable++;
            continue;
          }
          // Lines are appended in time order, so everything further back is older still.
          older = since !== undefined && Date.parse(incident.timestamp) < since.getTime();
          if (older) break;
          found.push(incident);
          if (found.length === INCIDENT_LIST_LIMIT) break;
        }
        if (unreadable > 0) log(`${file}: skipped ${unreadable} unreadable line(s) while listing incidents`);
        if (older || found.length === INCIDENT_LIST_LIMIT) break;
      }
      return found;
    },
  };
}

function parseIncidentLine(text: string): IncidentRecord | undefined {
  try {
    const value: unknown = JSON.parse(text);
    return isIncidentRecord(value) ? (value as IncidentRecord) : undefined;
  } catch {
    return undefined;
  }
}
