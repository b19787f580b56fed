/** "Did you mean" hints for names typed wrong: flags, environment variables. */

/**
 * Edits (insert, delete or replace one character) that turn `a` into `b`: the Levenshtein
 * distance.
 *
 * @example editDistance('prot', 'port') // 2
 */
function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const row = d[i]!;
      row[j] = Math.min(d[i - 1]![j]! + 1, row[j - 1]! + 1, d[i - 1]![j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
  }
  return d[a.length]![b.length]!;
}

/** `; did you mean X?` for the known word nearest `typed`, when it is near enough to be a typo; else nothing. */
export function didYouMean(typed: string, known: readonly string[], prefix = ''): string {
  let best: string | undefined;
  let bestDistance = Math.min(2, Math.ceil(typed.length / 3)) + 1;
  for (const word of known) {
    const distance = editDistance(typed, word);
    if (distance < bestDistance) [best, bestDistance] = [word, distance];
  }
  return best === undefined ? '' : `; did you mean ${prefix}${best}?`;
}
