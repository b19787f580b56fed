import { createHmac, createSecretKey, timingSafeEqual, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';

/** Fewer bytes than this are too easy to guess for an HMAC-SHA256 key. */
export const MIN_AUDIT_KEY_BYTES = 32;

/** The audit key file is missing, unreadable or too short. */
export class AuditKeyError extends Error {
  override readonly name = 'AuditKeyError';
}

/**
 * Reads the audit HMAC key (`--audit-key-file`): the file's bytes with leading and trailing
 * whitespace removed (so `base64 > F` and a trailing newline both work), at least
 * {@link MIN_AUDIT_KEY_BYTES}. Throws an {@link AuditKeyError} that names the file and says what
 * to fix. The key is returned as a KeyObject, which never prints its bytes.
 *
 * @example
 * const key = await readAuditKeyFile('/etc/policyguard/audit.key'); // made with: head -c 48 /dev/urandom | base64 > audit.key
 */
export async function readAuditKeyFile(path: string): Promise<KeyObject> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (error) {
    throw new AuditKeyError(`audit key file ${path} cannot be read: ${(error as Error).message}`, { cause: error });
  }
  const material = trimWhitespace(bytes);
  if (material.length < MIN_AUDIT_KEY_BYTES) {
    throw new AuditKeyError(
      `audit key file ${path} holds ${material.length} bytes of key material (whitespace at either end ignored); ` +
        `at least ${MIN_AUDIT_KEY_BYTES} are needed, e.g. made with: head -c 48 /dev/urandom | base64 > ${path}`,
    );
  }
  return createSecretKey(material);
}

function trimWhitespace(bytes: Buffer): Buffer {
  const isSpace = (byte: number | undefined) => byte === 0x20 || (byte !== undefined && byte >= 0x09 && byte <= 0x0d);
  let start = 0;
  let end = bytes.length;
  while (start < end && isSpace(bytes[start])) start++;
  while (end > start && isSpace(bytes[end - 1])) end--;
  return bytes.subarray(start, end);
}

/**
 * HMAC-SHA256 of `text` under `key`, hex: a record's `mac` (over its hash) and an anchor's.
 *
 * @example
 * record.mac === macOf(key, record.hash);
 */
export function macOf(key: KeyObject, text: string): string {
  return createHmac('sha256', key).update(text).digest('hex');
}

/**
 * Whether `mac` is the MAC of `text` under `key`, compared in constant time.
 *
 * @example
 * if (!macMatches(key, record.hash, record.mac)) throw new Error('forged');
 */
export function macMatches(key: KeyObject, text: string, mac: string | undefined): boolean {
  if (mac === undefined) return false;
  const expected = Buffer.from(macOf(key, text), 'hex');
  const given = Buffer.from(mac, 'hex');
  return given.length === expected.length && timingSafeEqual(given, expected);
}
