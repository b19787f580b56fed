/**
 * One output line per figure: `name  value  baseline  ratio  [note]`. The ratio is always
 * value ÷ baseline, so for times below 1 is faster and for throughput above 1 is more.
 */

export interface Figure {
  name: string;
  value: number;
  unit: string;
  /** What the value is compared with, measured in the same run (or a target, labelled so). */
  baseline?: { label: string; value: number; unit?: string };
  /** Free text after the ratio: a target verdict, a sample count. */
  note?: string;
}

/** Every figure printed so far, for a summary or a caller that wants them as data. */
export const printed: Figure[] = [];

/** 3 significant digits, no exponent for the magnitudes a benchmark prints. */
export function fmt(n: number): string {
  if (!Number.isFinite(n)) return String(n);
  if (n === 0) return '0';
  const abs = Math.abs(n);
  if (abs >= 1000) return Math.round(n).toLocaleString('en-US');
  const digits = abs >= 100 ? 0 : abs >= 10 ? 1 : abs >= 1 ? 2 : Math.min(6, 2 - Math.floor(Math.log10(abs)));
  return n.toFixed(digits);
}

const COLUMNS = [44, 16, 30, 10];

/** Print the header once, before the first figure. */
export function printHeader(): void {
  console.log(['figure', 'value', 'baseline', 'ratio'].map((h, i) => h.padEnd(COLUMNS[i]!)).join('  ') + '  note');
}

export function printFigure(f: Figure): void {
  printed.push(f);
  const value = `${fmt(f.value)} ${f.unit}`;
  const base = f.baseline ? `${f.baseline.label} ${fmt(f.baseline.value)} ${f.baseline.unit ?? f.unit}` : '-';
  const ratio = f.baseline && f.baseline.value !== 0 ? `${fmt(f.value / f.baseline.value)}x` : '-';
  const cells = [f.name, value, base, ratio];
  console.log(cells.map((c, i) => c.padEnd(COLUMNS[i]!)).join('  ') + (f.note ? `  ${f.note}` : ''));
}

/** A printed line that is not a figure (a skipped section and why, a check). */
export function printInfo(text: string): void {
  console.log(`# ${text}`);
}

/** "ok" / "MISSED by x%" for a target where smaller is better. */
export function atMost(value: number, target: number, unit: string): string {
  return value <= target ? `target <= ${fmt(target)} ${unit}: ok` : `target <= ${fmt(target)} ${unit}: MISSED by ${fmt(((value - target) / target) * 100)}%`;
}

/** "ok" / "MISSED by x%" for a target where larger is better. */
export function atLeast(value: number, target: number, unit: string): string {
  return value >= target ? `target >= ${fmt(target)} ${unit}: ok` : `target >= ${fmt(target)} ${unit}: MISSED by ${fmt(((target - value) / target) * 100)}%`;
}
