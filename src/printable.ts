/**
 * Text a caller chose (an agent's target, its arguments), made safe to show a person: what
 * people decide on must look like what it is.
 */

/**
 * Characters that move the cursor, recolour, or reorder text on a terminal or a page (C0 and C1
 * controls, DEL, bidirectional overrides, zero-width ones): an agent chooses the target and
 * arguments an approver reads, and must not be able to make one call look like another.
 */
// eslint-disable-next-line no-control-regex -- finding control characters is the point
const UNPRINTABLE = /[\u0000-\u001f\u007f-\u009f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]/g;

/** `text` with every {@link UNPRINTABLE} character shown as its escape (`\u001b`), as JSON writes it. */
export function printable(text: string): string {
  return text.replace(UNPRINTABLE, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}
