import { describe, expect, it } from 'vitest';
import { createLogger } from './log.js';
import { noteActionId, requestContext } from './telemetry/request-context.js';

describe('createLogger', () => {
  it('text: time LEVEL message key=value, quoting what needs it', () => {
    const lines: string[] = [];
    createLogger('info', (l) => lines.push(l)).warn('audit sink is behind', { buffered: 1200, dir: 'a b', gone: undefined });
    expect(lines).toEqual([expect.stringMatching(/^\d{4}-\d\d-\d\dT[\d:.]+Z WARN {2}audit sink is behind buffered=1200 dir="a b"$/)]);
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
