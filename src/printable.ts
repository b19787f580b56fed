/**
 * Text a caller chose (an agent's target, its arguments), made safe to show a person: what
 * people decide on must look like what it is.
 */

/**
 * Characters that move the cursor, recolour, reorder or hide text on a terminal or a page: C0
 * and C1 controls, DEL, format characters (bidirectional overrides, zero-width ones, Unicode
 * tags, which spell text a model reads and a person does not see), line and paragraph
 * separators, and every other default-ignorable code point (variation selectors, U+034F, Hangul
 * fillers): an agent chooses the target and arguments an approver reads, and must not be able to
 * make one call look like another, or a key look like another (`table` and `table\u034f`).
 */
const UNPRINTABLE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Default_Ignorable_Code_Point}]/gu;

/**
 * `text` with every {@link UNPRINTABLE} character shown as its escape (`\u001b`), as JSON writes
 * it: one beyond U+FFFF as its two UTF-16 halves (`\udb40\udc20`), so a JSON line stays JSON.
 */
export function printable(text: string): string {
  return text.replace(UNPRINTABLE, (c) => Array.from({ length: c.length }, (_, i) => `\\u${c.charCodeAt(i).toString(16).padStart(4, '0')}`).join(''));
}
