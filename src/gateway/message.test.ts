/**
 * Keys equal under case folding (src/engine/keys.ts), and the tools/call the gateway builds from
 * what it decided (./message.ts). The HTTP side — what reaches an upstream — is in ./gateway.test.ts and
 * tests/standalone/gateway.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { foldedDuplicate, readToolsCall, refuseMessage, TASKS_REFUSED } from './message.js';

describe('foldedDuplicate', () => {
  it('finds two keys equal under folding at any depth, in arrays too, and says where', () => {
    expect(foldedDuplicate({ name: 'a', arguments: { items: [{ to: 'x' }, { to: 'y', TO: 'z' }] } }, 'params')).toEqual({ where: 'params.arguments.items.1', keys: ['to', 'TO'] });
    expect(foldedDuplicate({ name: 'a', arguments: { to: 'x', TO: 'y' } }, 'params')).toEqual({ where: 'params.arguments', keys: ['to', 'TO'] });
  });
  it('keys that only look alike (Go keeps them apart) and values are not its business', () => {
    expect(foldedDuplicate({ name: 'NAME', arguments: { list: ['a', 'A'], \u0130d: 1, id: 2 } }, 'params')).toBeUndefined();
  });
});

describe('refuseMessage: every message, whatever its method', () => {
  it.each([
    [{ jsonrpc: '2.0', id: 1, method: 'ping', Method: 'tools/call' }, /key "Method", which is not "method"/],
    [{ jsonrpc: '2.0', ID: 1, method: 'tools/list' }, /key "ID", which is not "id"/],
    [{ jsonrpc: '2.0', id: 1, method: 'tools/call', param\u017f: {} }, /key "param\u017f", which is not "params"/],
    [{ jsonrpc: '2.0', id: 1, Result: {} }, /key "Result", which is not "result"/],
  ])('a top-level key that folds to a JSON-RPC member: %j', (message, text) => {
    expect(refuseMessage(message)).toMatchObject({ httpStatus: 400, code: -32600, outcome: 'ambiguous_key', message: expect.stringMatching(text) });
  });
  it.each(['Tools/Call', 'TOOLS/CALL', 'tools/call ', ' tools/call', 'tools/call\n', 'tools/call\u0000', 'tool\u017f/call', 'tools/\u200bcall', 'Tools/List'])('a look-alike method: %j', (method) => {
    expect(refuseMessage({ jsonrpc: '2.0', id: 1, method })).toMatchObject({ httpStatus: 400, code: -32600, outcome: 'lookalike_method' });
  });
  it.each(['tasks/get', 'tasks/result', 'tasks/list', 'tasks/cancel', 'tasks/update', 'Tasks/Get'])('a task method (%j) is refused: an upstream keeps one set of tasks for every agent', (method) => {
    expect(refuseMessage({ jsonrpc: '2.0', id: 1, method, params: { taskId: 't-1' } })).toEqual({ httpStatus: 200, code: -32601, message: `Method not found: ${method}: ${TASKS_REFUSED}`, outcome: 'tasks_unsupported' });
  });
  it('leaves everything else alone: the methods as spelled, other methods in any case, responses', () => {
    for (const method of ['tools/call', 'tools/list', 'logging/setLevel', 'Resources/Read', 'notifications/initialized']) expect(refuseMessage({ jsonrpc: '2.0', id: 1, method })).toBeUndefined();
    expect(refuseMessage({ jsonrpc: '2.0', id: 1, result: { Result: 1, result: 2 } })).toBeUndefined();
  });
});

describe('readToolsCall', () => {
  const call = (params: unknown, extra: object = {}) => readToolsCall({ jsonrpc: '2.0', id: 7, method: 'tools/call', params, ...extra });

  it('forwards the decided name and arguments, and the _meta the client sent, nothing else', () => {
    const read = call({ name: 'add', arguments: { a: 1 }, _meta: { progressToken: 't' } });
    expect(read.ok && JSON.stringify(read.call.forward)).toBe('{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"add","arguments":{"a":1},"_meta":{"progressToken":"t"}}}');
    const bare = call({ name: 'ping' });
    expect(bare.ok && bare.call.forward).toEqual({ jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'ping', arguments: {} } });
  });
  it.each([
    [{ name: 'read_file', Name: 'delete_repo', arguments: {} }, 'params', 'name', 'Name'],
    [{ name: 'refund', arguments: { amount: 100 }, Arguments: { amount: 900 } }, 'params', 'arguments', 'Arguments'],
    [{ name: 'refund', arguments: { amount: 100 }, 'argument\u017f': { amount: 900 } }, 'params', 'arguments', 'argument\u017f'],
    [{ name: 'refund', arguments: { amount: 100, AMOUNT: 900 } }, 'params.arguments', 'amount', 'AMOUNT'],
    [{ name: 'x', arguments: {}, _meta: { progressToken: 1, PROGRESSTOKEN: 2 } }, 'params._meta', 'progressToken', 'PROGRESSTOKEN'],
  ])('refuses keys equal under folding: %j', (params, where, first, second) => {
    const read = call(params);
    expect(read.ok).toBe(false);
    expect(!read.ok && read.refusal).toMatchObject({ httpStatus: 200, code: -32602, outcome: 'ambiguous_key' });
    expect(!read.ok && read.refusal.message).toContain(`${where} holds the keys "${first}" and "${second}", which are equal ignoring case`);
  });
  it('refuses a params key that folds to a member without being it, and any key it does not decide', () => {
    const misspelled = call({ NAME: 'delete_repo', arguments: {} });
    expect(!misspelled.ok && misspelled.refusal).toMatchObject({ code: -32602, outcome: 'ambiguous_key', message: expect.stringContaining('params holds the key "NAME", which is not "name"') });
    const extra = call({ name: 'add', arguments: {}, input: { a: 1 } });
    expect(!extra.ok && extra.refusal).toMatchObject({ code: -32602, outcome: 'invalid_params', message: expect.stringContaining('"input" would reach the upstream undecided') });
  });
  it.each([{ ttl: 1000 }, {}, null])('a task-augmented call (params.task %j) is refused: its task would be every agent\'s, its result unaudited', (task) => {
    const read = call({ name: 'add', arguments: {}, task });
    expect(!read.ok && read.refusal).toEqual({ httpStatus: 200, code: -32602, message: `Invalid params: ${TASKS_REFUSED}`, outcome: 'tasks_unsupported' });
  });
  it('a tools/call without an id (a notification) is refused: a call is decided and answered', () => {
    const read = readToolsCall({ jsonrpc: '2.0', method: 'tools/call', params: { name: 'add' } });
    expect(!read.ok && read.refusal).toMatchObject({ httpStatus: 400, code: -32600, outcome: 'invalid_request' });
  });
  it('keeps the specific errors for a missing name and for arguments that are not an object', () => {
    const noName = call({ arguments: {} });
    expect(!noName.ok && noName.refusal.message).toBe('Invalid params: tools/call needs params.name, the tool to call');
    const list = call({ name: 'add', arguments: [1] });
    expect(!list.ok && list.refusal.message).toBe('Invalid params: tools/call params.arguments must be an object');
  });
});
