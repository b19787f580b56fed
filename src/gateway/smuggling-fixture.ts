/**
 * tools/call params that a server reading keys ignoring case (Go's encoding/json: mcp-go, the Go
 * MCP SDK before v1.3.1) reads otherwise than the gate decides: it takes the second key of each
 * pair. Each must be refused before deciding, naming both keys (./message.ts). Shared by the
 * gateway's unit test and the standalone server's test, which decide `refund` with a rule on
 * `amount`.
 *
 * @example for (const { params, where, keys } of smugglingShapes('issue_refund')) …
 */
export function smugglingShapes(refund: string): Array<{ shape: string; params: string; where: string; keys: [string, string] }> {
  return [
    { shape: 'params.Name after params.name', params: '{"name":"read_file","Name":"delete_repo","arguments":{}}', where: 'params', keys: ['name', 'Name'] },
    { shape: 'params.NAME after params.name', params: '{"name":"read_file","NAME":"delete_repo","arguments":{}}', where: 'params', keys: ['name', 'NAME'] },
    { shape: 'params.Arguments after params.arguments', params: `{"name":"${refund}","arguments":{"amount":100},"Arguments":{"amount":900}}`, where: 'params', keys: ['arguments', 'Arguments'] },
    { shape: 'params.argumentſ (U+017F)', params: `{"name":"${refund}","arguments":{"amount":100},"argument\\u017f":{"amount":900}}`, where: 'params', keys: ['arguments', 'argument\u017f'] },
    { shape: 'arguments.AMOUNT after arguments.amount', params: `{"name":"${refund}","arguments":{"amount":100,"AMOUNT":900}}`, where: 'params.arguments', keys: ['amount', 'AMOUNT'] },
    { shape: 'a Kelvin-sign key in a nested object', params: `{"name":"${refund}","arguments":{"amount":100,"payee":{"kind":"ok","\\u212aind":"other"}}}`, where: 'params.arguments.payee', keys: ['kind', '\u212aind'] },
    { shape: 'keys in an object in a list', params: '{"name":"send","arguments":{"to":[{"addr":"a@x"},{"addr":"a@x","ADDR":"b@y"}]}}', where: 'params.arguments.to.1', keys: ['addr', 'ADDR'] },
    { shape: 'params._meta', params: '{"name":"read_file","arguments":{},"_meta":{"progressToken":1,"progresstoken":2}}', where: 'params._meta', keys: ['progressToken', 'progresstoken'] },
  ];
}
