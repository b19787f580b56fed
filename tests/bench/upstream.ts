/**
 * The upstreams of the gateway bench, each in its own process, answering `tools/call`:
 *   node --import tsx tests/bench/upstream.ts raw   → a bare node:http responder with a canned
 *     result: as fast as an upstream can be, so what the gateway adds shows in full;
 *   node --import tsx tests/bench/upstream.ts sdk   → a real MCP server (the SDK v2, stateless,
 *     JSON answers), what a gateway usually sits in front of.
 * Prints "port N" once listening.
 */
import { createServer } from 'node:http';
import { McpServer } from '@modelcontextprotocol/server';
import { z } from 'zod';
import { ANONYMOUS } from '../../src/auth/authenticate.js';
import { classifyMcpRequest, createMcpEndpoint } from '../../src/mcp/revisions.js';

const kind = process.argv[2] === 'sdk' ? 'sdk' : 'raw';

function sdkServer(): McpServer {
  const server = new McpServer({ name: 'bench-upstream', version: '1.0.0' });
  for (const name of ['create_issue', 'list_issues', 'get_file', 'search_code']) {
    server.registerTool(name, { description: name, inputSchema: z.object({ repo: z.string(), n: z.number() }) }, async () => ({ content: [{ type: 'text', text: 'done' }] }));
  }
  return server;
}

const endpoint = kind === 'sdk' ? createMcpEndpoint(sdkServer, () => undefined) : undefined;

const server = createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { id: number };
    if (endpoint) return void endpoint.serve(req, res, body, classifyMcpRequest(req, body), ANONYMOUS);
    const text = JSON.stringify({ jsonrpc: '2.0', id: body.id, result: { content: [{ type: 'text', text: 'done' }], isError: false } });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }).end(text);
  });
});
server.listen(0, '127.0.0.1', () => process.stdout.write(`port ${(server.address() as { port: number }).port}\n`));
