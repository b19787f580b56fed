/**
 * Keys as servers that match them ignoring case read them. Go's encoding/json (mcp-go, the Go
 * MCP SDK before v1.3.1) takes every key equal to a field's name under Unicode simple case
 * folding as that field: `AMOUNT` is `amount` to it. The gateway refuses a call holding two such
 * keys unless its upstream's `keyMatching` is `Exact` (src/gateway/message.ts); an argument
 * condition on `amount` finds an `AMOUNT` alone and cannot be evaluated (./arguments.ts,
 * docs/decisions.md).
 */

// eslint-disable-next-line no-control-regex -- all of ASCII, controls included
const ASCII = /^[\u0000-\u007f]*$/;
/** Half of a surrogate pair alone: what a `\ud800` escape parses to, and Go decodes to U+FFFD. */
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;
const SURROGATE = /[\ud800-\udfff]/;

/**
 * `key` as a decoder that matches keys ignoring case sees it: two keys that Go's
 * `strings.EqualFold` (and encoding/json) takes as equal fold to the same string. Lowercase,
 * then uppercase (`ẞ` and `ß` both end as `SS`, `ϑ` and `ϴ` as `Θ`, `ſ` as `S`, the Kelvin sign
 * as `K`), a lone surrogate as U+FFFD. Checked against Go 1.26's `unicode.SimpleFold` over every
 * code point: every pair Go takes as equal folds alike here, and the lowercase → uppercase step
 * is one string per Go fold class, so a sigma's place in a word changes nothing. A few pairs Go
 * keeps apart fold alike too (`ı` and `i`, `ß` and `ss`, `ﬅ` and `ﬆ`): a refusal too many, never
 * one too few. Two native passes, so a key of a megabyte costs milliseconds. Not `foldCase`
 * (./glob.ts), which is how globs match, not how a server reads keys.
 *
 * @example foldKey('Argumentſ') === foldKey('arguments') // true
 */
export function foldKey(key: string): string {
  if (ASCII.test(key)) return key.toUpperCase();
  const folded = key.toLowerCase().toUpperCase();
  return SURROGATE.test(folded) ? folded.replace(LONE_SURROGATE, '\ufffd') : folded;
}
