import { describe, expect, it } from 'vitest';
import { createLogger } from './log.js';
import { printable } from './printable.js';
import { noteActionId, requestContext } from './telemetry/request-context.js';

describe('createLogger', () => {
  it('text: time LEVEL message key=value, quoting what needs it', () => {
    const lines: string[] = [];
    createLogger('info', (l) => lines.push(l)).warn('audit sink is behind', { buffered: 1200, dir: 'a b', gone: undefined });
    expect(lines).toEqual([expect.stringMatching(/^\d{4}-\d\d-\d\dT[\d:.]+Z WARN {2}audit sink is behind buffered=1200 dir="a b"$/)]);
  });

  it('text: a message holding a newline, a carriage return, ANSI or bidirectional characters stays one line, shown as escapes', () => {
    const lines: string[] = [];
    // An approval file's parse error quoting the file: the newline would start a forged line.
    createLogger('info', (l) => lines.push(l)).warn('approvals/a.yaml: bad line "x\n2026-11-29T08:12:01.120Z ERROR forged\r\u001b[2K\u0085\u202egnp.exe\u2028"');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/ WARN {2}approvals\/a\.yaml: bad line "x\\u000a2026-11-29T08:12:01\.120Z ERROR forged\\u000d\\u001b\[2K\\u0085\\u202egnp\.exe\\u2028"$/);
  });

  it('text: ordinary text, any script, and backslashes stay as they are', () => {
    const lines: string[] = [];
    createLogger('info', (l) => lines.push(l)).info('Tabelle löschen — 删除表 C:\\data', { path: 'C:\\data\\ü', who: 'Zoë' });
    expect(lines[0]).toMatch(/ INFO {2}Tabelle löschen — 删除表 C:\\data path=C:\\data\\ü who=Zoë$/);
  });

  it.each([
    ['a newline', 'x\n2026-11-29T08:12:01.120Z ERROR forged'],
    ['ANSI without a space', '\u001b[31mred'],
    ['C1 next line and DEL', 'a\u0085b\u007f'],
    ['a bidirectional override', 'drop_prod\u202etxt.exe'],
    ['a line separator and a zero-width space', 'a\u2028b\u200bc'],
  ])('text: a field value holding %s is quoted, escaped, one line, and JSON.parse gives it back', (_what, value) => {
    const lines: string[] = [];
    createLogger('info', (l) => lines.push(l)).info('upstream call failed', { error: value, n: 1 });
    expect(lines).toHaveLength(1);
    const m = /^\S+ INFO {2}upstream call failed error=(".*") n=1$/.exec(lines[0]!);
    expect(m).not.toBeNull();
    expect(m![1]).toBe(printable(m![1]!));
    expect(JSON.parse(m![1]!)).toBe(value);
  });

  it('json: a message or field holding a newline, ANSI or bidirectional characters is one line, and parses back to exactly what was logged', () => {
    const lines: string[] = [];
    const msg = 'bad line "x\n2026-11-29T08:12:01.120Z ERROR forged\u001b[2K"';
    const target = 'drop\u202etxt\r\n\u2028\u0085\u200b';
    createLogger('info', (l) => lines.push(l), 'json').warn(msg, { target });
    expect(lines).toHaveLength(1);
    // eslint-disable-next-line no-control-regex -- finding control characters is the point
    expect(lines[0]).not.toMatch(/[\u0000-\u001f\u0085\u2028\u202e\u200b]/);
    expect(lines[0]).toContain('\\u001b[2K');
    expect(lines[0]).toContain('drop\\u202etxt\\r\\n\\u2028\\u0085\\u200b');
    expect(JSON.parse(lines[0]!)).toMatchObject({ msg, target });
  });

  it('json: one object per line, time, level and msg first and never overridden by a field', () => {
    const lines: string[] = [];
    const log = createLogger('debug', (l) => lines.push(l), 'json');
    log.debug('manifest loaded', { file: 'a.yaml', objects: 2, ok: true, skipped: undefined, msg: 'not me', level: 'nope' });
    const line = JSON.parse(lines[0]!) as Record<string, unknown>;
    expect(Object.keys(line)).toEqual(['time', 'level', 'msg', 'file', 'objects', 'ok']);
    expect(line).toMatchObject({ level: 'debug', msg: 'manifest loaded', file: 'a.yaml', objects: 2, ok: true });
  });

  it('below the level nothing is written', () => {
    const lines: string[] = [];
    createLogger('warn', (l) => lines.push(l), 'json').info('quiet');
    expect(lines).toEqual([]);
  });

  it('inside a request, lines carry its trace id and, once decided, its action id', () => {
    const lines: string[] = [];
    const log = createLogger('info', (l) => lines.push(l), 'json');
    log.info('outside');
    requestContext.run({ trace_id: '4bf92f3577b34da6a3ce929d0e0e4736' }, () => {
      log.info('before the decision');
      noteActionId('act_0123456789ab');
      log.info('after the decision', { action_id: 'act_explicit0000' });
    });
    const [outside, before, after] = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(outside).not.toHaveProperty('trace_id');
    expect(before).toMatchObject({ trace_id: '4bf92f3577b34da6a3ce929d0e0e4736' });
    expect(before).not.toHaveProperty('action_id');
    expect(after).toMatchObject({ trace_id: '4bf92f3577b34da6a3ce929d0e0e4736', action_id: 'act_explicit0000' });
  });
});
