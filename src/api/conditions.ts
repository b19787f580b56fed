/**
 * Condition types and reasons written to `status.conditions`, in one place so the controller,
 * the standalone store and the docs agree.
 */
export const CONDITION_READY = 'Ready';

export const Reason = {
  /** The object compiled and is in force. */
  Accepted: 'Accepted',
  /** The spec failed validation the CRD schema could not express. */
  InvalidSpec: 'InvalidSpec',
  /** A glob was rejected (unsafe or malformed); the message names it. */
  InvalidPattern: 'InvalidPattern',
  /** Another GuardAgent already claims the same agentId. */
  Conflict: 'Conflict',
} as const;
export type Reason = (typeof Reason)[keyof typeof Reason];
