import { describe, expect, it } from 'vitest';
import { printable } from './printable.js';

describe('printable', () => {
  it('shows controls, bidirectional overrides and zero-width characters as escapes', () => {
    expect(printable('drop\r\u001b[2Kread\u202eexe.txt\u200b\u0085')).toBe('drop\\u000d\\u001b[2Kread\\u202eexe.txt\\u200b\\u0085');
  });
  it('leaves ordinary text alone, any script', () => {
    expect(printable('drop_table — Tabelle löschen, 删除表 🙂')).toBe('drop_table — Tabelle löschen, 删除表 🙂');
  });
});
