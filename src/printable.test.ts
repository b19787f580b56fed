import { describe, expect, it } from 'vitest';
import { printable } from './printable.js';

describe('printable', () => {
  it('shows controls, bidirectional overrides and zero-width characters as escapes', () => {
    expect(printable('drop\r\u001b[2Kread\u202eexe.txt\u200b\u0085')).toBe('drop\\u000d\\u001b[2Kread\\u202eexe.txt\\u200b\\u0085');
  });
  it('shows every other invisible or format character too: U+034F, soft hyphen, variation selectors, Hangul fillers, Unicode tags (as UTF-16 halves, still JSON)', () => {
    expect(printable('table\u034f|a\u00adb|\ufe0f|\u3164|\u{e0020}\u{e0065}')).toBe('table\\u034f|a\\u00adb|\\ufe0f|\\u3164|\\udb40\\udc20\\udb40\\udc65');
    expect(JSON.parse(`"${printable('x\u{e0041}')}"`)).toBe('x\u{e0041}');
  });
  it('leaves ordinary text alone, any script', () => {
    expect(printable('drop_table — Tabelle löschen, 删除表 🙂')).toBe('drop_table — Tabelle löschen, 删除表 🙂');
  });
});
