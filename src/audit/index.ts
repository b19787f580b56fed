// The audit package's public surface; import from here rather than from individual files.
export {
  GENESIS_HASH,
  canonicalJson,
  createAuditRecord,
  hashRecord,
  redactSecrets,
  redactSecretText,
  type AuditAction,
  type AuditEntryInput,
  type AuditEvaluation,
  type AuditRecord,
} from './record.js';
export {
  AuditWriteError,
  matchesAuditQuery,
  type AuditQuery,
  type AuditQueryResult,
  type AuditSink,
} from './sink.js';
export { openFileAuditSink, type FileAuditSinkOptions } from './file-sink.js';
export { verifyAuditChain, type AuditVerifyResult } from './verify.js';
export {
  INCIDENT_LIST_LIMIT,
  openFileIncidentLog,
  type IncidentInput,
  type IncidentLog,
  type IncidentRecord,
} from './incident-file.js';
