/**
 * The dashboard in a real headless Chromium (Debian's `chromium`, driven by playwright-core),
 * against a real server (standalone mode, `--auth token`, real HTTP on loopback): the page asks
 * for a token before any request, refuses a wrong one, and then shows exactly the decisions the
 * test made through MCP, as far as the caller may read them, and the approvals those decisions
 * asked for until the real CLI decides one. Screenshots go to $POLICYGUARD_SCREENSHOTS (default:
 * a folder in the system temp dir, printed).
 */
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer, type RunningPolicyGuard } from '../../src/cli/serve.js';
import { parseServeConfig } from '../../src/config.js';
import { silentLogger } from '../../src/log.js';
import { runCli } from '../standalone/cli.js';
import { eventually } from '../standalone/eventually.js';
import { writeTokenFile } from '../standalone/harness.js';

// page.evaluate callbacks run in the browser; this project compiles without the DOM library.
declare const document: any;
declare const performance: any;

const CHROMIUM = process.env.POLICYGUARD_CHROMIUM ?? '/usr/bin/chromium';
/** What this machine's Chromium needs (docs: no sandbox as root, no calls home on a closed network). */
const CHROMIUM_FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const FIXTURE = new URL('./fixtures/dashboard', import.meta.url).pathname;
const TOKENS = { root: 'root-token-dashboard-1', alice: 'alice-token-dashboard-2', bot: 'bot-token-dashboard-3' };
const SCREENSHOTS = process.env.POLICYGUARD_SCREENSHOTS ?? join(tmpdir(), 'policyguard-ui-screenshots');

/** Decisions the test made, counted the way the page should count them. */
interface Made {
  allow: number;
  deny: number;
  require_approval: number;
  deniedTargets: Map<string, number>;
  deniedAgents: Map<string, number>;
}

let pg: RunningPolicyGuard;
let dataDir: string;
let browser: Browser;
let tokens: Awaited<ReturnType<typeof writeTokenFile>>;
const made: Record<'all' | 'alice', Made> = { all: newMade(), alice: newMade() };
/** Approvals the refunds policy asked for (approval_id of the require_approval answers), oldest first. */
const asked: Record<'alice' | 'aliceLong' | 'bot', string> = { alice: '', aliceLong: '', bot: '' };
const LONG_MEMO = 'm'.repeat(300);
const HTML_NOTE = '<img src=x onerror=alert(1)>';

function newMade(): Made {
  return { allow: 0, deny: 0, require_approval: 0, deniedTargets: new Map(), deniedAgents: new Map() };
}

/** validate_action over plain JSON-RPC, as any MCP client sends it. */
async function validate(token: string, agent: string, target: string, parameters: Record<string, unknown> = {}): Promise<any> {
  const res = await fetch(`${pg.url}/mcp`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', authorization: `Bearer ${token}` },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'validate_action', arguments: { action_type: 'tool_call', target, agent_id: agent, parameters } } }),
  });
  const d = ((await res.json()) as any).result.structuredContent;
  for (const m of token === TOKENS.alice ? [made.all, made.alice] : [made.all]) {
    m[d.decision as 'allow' | 'deny' | 'require_approval']++;
    if (!d.allowed) {
      m.deniedTargets.set(target, (m.deniedTargets.get(target) ?? 0) + 1);
      m.deniedAgents.set(agent, (m.deniedAgents.get(agent) ?? 0) + 1);
    }
  }
  return d;
}

/** A page that records console errors and uncaught exceptions, and the requests it makes. */
async function openPage(): Promise<{ page: Page; errors: string[]; requests: string[] }> {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const errors: string[] = [];
  const requests: string[] = [];
  page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
  page.on('pageerror', (e) => errors.push(`uncaught: ${e.message}`));
  page.on('request', (r) => requests.push(new URL(r.url()).pathname));
  return { page, errors, requests };
}

async function signIn(page: Page, token: string): Promise<void> {
  await page.fill('#token', token);
  await page.click('#login button[type=submit]');
}

/** A new page on /ui/, signed in with `token`. */
async function signedIn(token: string): Promise<{ page: Page; errors: string[] }> {
  const { page, errors } = await openPage();
  await page.goto(`${pg.url}/ui/`);
  await signIn(page, token);
  return { page, errors };
}

/** What the page rendered: the plot's data attributes, the cards, the bars and tables. */
async function rendered(page: Page) {
  await page.waitForSelector('#timeline[data-points]');
  return page.evaluate(() => {
    const data = (id: string): Record<string, string> => ({ ...document.getElementById(id).dataset });
    const bars = (id: string): Array<[string, number]> => [...document.querySelectorAll(`#${id} .bar-row`)].map((r: any) => [r.dataset.label, Number(r.dataset.count)]);
    const rows = (id: string, which = 'tr'): string[][] => [...document.querySelectorAll(`#${id} tbody ${which}`)].map((tr: any) => [...tr.querySelectorAll('td')].map((td: any) => td.textContent));
    return {
      timeline: data('timeline'),
      canvas: document.querySelectorAll('#timeline canvas').length,
      cards: Object.fromEntries(['total', 'allow', 'deny', 'approval'].map((k) => [k, Number(document.getElementById(`card-${k}`).dataset.value)])),
      tools: bars('top-tools'),
      agents: bars('top-agents'),
      agentRows: rows('agents'),
      policyRows: rows('policies'),
      incidentRows: rows('incidents'),
      problems: [...document.querySelectorAll('#problems li')].map((li: any) => li.textContent as string),
      scope: document.getElementById('scope').textContent as string,
      // Each approval is a row of details and, under it, a full-width row with the command.
      approvalRows: rows('approval-list', 'tr:not(.below)'),
      approvalCommands: [...document.querySelectorAll('#approval-list tr.below .cmd')].map((c: any) => c.textContent as string),
      approvalCount: document.getElementById('approval-count')?.textContent as string,
      // Markup or controls inside the approvals section other than the table's own.
      approvalElements: document.querySelectorAll('#approvals img, #approvals button, #approvals form, #approvals a, #approvals input').length as number,
    };
  });
}

/** The names of the approvals `GET /ui/api/dashboard` lists as pending for `token`'s caller. */
async function pendingNames(token: string): Promise<string[]> {
  const res = await fetch(`${pg.url}/ui/api/dashboard?range=1h`, { headers: { authorization: `Bearer ${token}` } });
  return ((await res.json()) as any).approvals.pending.map((p: { name: string }) => p.name);
}

/** A row of the pending approvals table, as the page should show it. */
function approvalRow(name: string, agent: string, preview: string): unknown[] {
  return [
    name, // no namespace in standalone mode
    agent,
    'tool_call',
    'issue_refund',
    preview,
    'A person approves refunds above 500',
    expect.stringMatching(/^\d+(s|m) ago$/),
    expect.stringMatching(/^in \d+m$/), // the default --approval-ttl, 1h
  ];
}

/** The command the page shows under an approval: the standalone CLI's, with this server's data dir. */
const approveCommand = (name: string) => `policyguard approvals approve ${name} --data-dir ${dataDir}`;

const top = (m: Map<string, number>) => [...m.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`Chromium not found at ${CHROMIUM}. The browser tests need Debian's chromium package: \`sudo apt-get install -y chromium\` (or set POLICYGUARD_CHROMIUM to a Chromium or Chrome binary).`);
  }
  await mkdir(SCREENSHOTS, { recursive: true });
  tokens = await writeTokenFile(TOKENS);
  dataDir = await mkdtemp(join(tmpdir(), 'policyguard-ui-'));
  pg = await startServer(parseServeConfig(['--standalone', '--config-dir', FIXTURE, '--data-dir', dataDir, '--port', '0', '--auth', 'token', '--token-file', tokens.file], {}), silentLogger);
  for (let i = 0; i < 4; i++) await validate(TOKENS.alice, 'agent-a', 'read_orders');
  for (let i = 0; i < 3; i++) await validate(TOKENS.alice, 'agent-a', 'drop_table');
  for (let i = 0; i < 2; i++) asked.alice = (await validate(TOKENS.alice, 'agent-a', 'issue_refund', { amount: 900 })).approval_id;
  await validate(TOKENS.bot, 'bot', 'read_x');
  for (let i = 0; i < 5; i++) await validate(TOKENS.bot, 'bot', 'send_email');
  for (let i = 0; i < 2; i++) await validate(TOKENS.bot, 'bot', 'drop_users');
  await validate(TOKENS.root, 'ops-admin', 'drop_table');
  // Two more asks, a few ms apart so "newest first" has one answer.
  await new Promise((r) => setTimeout(r, 5));
  asked.aliceLong = (await validate(TOKENS.alice, 'agent-a', 'issue_refund', { amount: 950, memo: LONG_MEMO })).approval_id;
  await new Promise((r) => setTimeout(r, 5));
  asked.bot = (await validate(TOKENS.bot, 'bot', 'issue_refund', { amount: 700, note: HTML_NOTE, password: 'hunter2' })).approval_id;
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_FLAGS });
}, 60_000);
afterAll(async () => {
  await browser?.close();
  await pg?.close();
  await tokens?.remove();
  await rm(dataDir, { recursive: true, force: true });
  process.stderr.write(`[ui] screenshots in ${SCREENSHOTS}\n`);
});

describe('the dashboard in Chromium', () => {
  it('asks for a token before any data request, and says so when a wrong one is refused', async () => {
    const { page, errors, requests } = await openPage();
    await page.goto(`${pg.url}/ui`);
    expect(new URL(page.url()).pathname).toBe('/ui/');
    await page.waitForSelector('#login:not([hidden])');
    expect(await page.isHidden('#main')).toBe(true);
    expect(await page.textContent('#login-message')).toMatch(/requires a bearer token \(--auth token\)/);
    expect(requests.filter((p) => p.startsWith('/ui/api/'))).toEqual([]);
    expect(errors).toEqual([]);

    await signIn(page, 'not-a-token');
    await page.waitForFunction(() => /^Token refused/.test(document.getElementById('login-message').textContent ?? ''));
    expect(await page.textContent('#login-message')).toBe('Token refused: Unauthorized: unknown token');
    expect(await page.isHidden('#main')).toBe(true);
    // The refusal itself is the only error: Chromium logs every 401 response.
    expect(errors).toEqual([expect.stringMatching(/status of 401/)]);
    await page.screenshot({ path: join(SCREENSHOTS, 'token-refused.png') });
    await page.close();
  });

  it('shows an admin every decision the test made: plot, cards, top denied tools and agents, agents, incidents, policies', async () => {
    const { page, errors } = await openPage();
    const started = Date.now();
    await page.goto(`${pg.url}/ui/`);
    await signIn(page, TOKENS.root);
    const r = await rendered(page);
    const shown = Date.now() - started;
    const m = made.all;

    expect(r.canvas).toBeGreaterThan(0);
    expect(r.timeline).toMatchObject({ total: String(m.allow + m.deny + m.require_approval), allow: String(m.allow), deny: String(m.deny), approval: String(m.require_approval), points: '49' });
    expect(r.cards).toEqual({ total: m.allow + m.deny + m.require_approval, allow: m.allow, deny: m.deny, approval: m.require_approval });
    expect(r.tools).toEqual(top(m.deniedTargets));
    expect(r.agents).toEqual(top(m.deniedAgents));
    expect(r.scope).toBe('All agents');
    expect(r.agentRows.map((row) => row.slice(0, 4))).toEqual([
      ['bot', '-', 'low', 'no'],
      ['agent-a', '-', 'medium', 'no'],
      ['ops-admin', '-', 'admin', 'no'],
    ]);
    expect(r.policyRows.map((row) => [row[0], row[2], row[5]]).sort()).toEqual([
      ['email-dry-run', 'Audit', 'True'],
      ['no-drops', 'Enforce', 'True'],
      ['reads', 'Enforce', 'True'],
      ['refunds', 'Enforce', 'True'],
    ]);
    expect(r.problems).toEqual([expect.stringMatching(/GuardUpstream tickets: InvalidSpec: .*secretKeyRef needs a cluster/)]);
    expect(r.incidentRows.length).toBe(m.deny);
    expect(r.incidentRows.every((row) => row[2] === 'policy_violation')).toBe(true);
    expect(errors).toEqual([]);

    // Page weight and load time, as the browser measured them (printed, not asserted).
    const perf = await page.evaluate(() => {
      const entries: Array<{ name: string; transferSize: number; decodedBodySize: number }> = [...performance.getEntriesByType('navigation'), ...performance.getEntriesByType('resource')];
      const nav = performance.getEntriesByType('navigation')[0];
      return {
        requests: entries.length,
        transferred: entries.reduce((sum, e) => sum + e.transferSize, 0),
        decoded: entries.reduce((sum, e) => sum + e.decodedBodySize, 0),
        domContentLoaded: Math.round(nav.domContentLoadedEventEnd as number),
        load: Math.round(nav.loadEventEnd as number),
        files: entries.map((e) => `${new URL(e.name).pathname} ${e.transferSize} B (${e.decodedBodySize} B decoded)`),
      };
    });
    process.stderr.write(
      `[ui] page weight: ${perf.requests} requests, ${(perf.transferred / 1024).toFixed(1)} KiB transferred (${(perf.decoded / 1024).toFixed(1)} KiB uncompressed); ` +
        `DOMContentLoaded ${perf.domContentLoaded} ms, load ${perf.load} ms; dashboard drawn ${shown} ms after navigation (token typed by the test)\n[ui]   ${perf.files.join('\n[ui]   ')}\n`,
    );
    await page.screenshot({ path: join(SCREENSHOTS, 'dashboard-admin.png'), fullPage: true });
    await page.screenshot({ path: join(SCREENSHOTS, 'dashboard.png') }); // the first screen: docs/images/dashboard.png
    await page.close();
  });

  it("shows a caller bound to one agent only that agent's decisions, agents and incidents", async () => {
    const { page, errors } = await signedIn(TOKENS.alice);
    const r = await rendered(page);
    const m = made.alice;
    expect(r.scope).toBe('Your agents: agent-a (and your own calls), as token:alice');
    expect(r.timeline).toMatchObject({ allow: String(m.allow), deny: String(m.deny), approval: String(m.require_approval) });
    expect(r.cards.total).toBe(m.allow + m.deny + m.require_approval);
    expect(r.tools).toEqual(top(m.deniedTargets));
    expect(r.agents).toEqual([['agent-a', m.deny + m.require_approval]]);
    expect(r.agentRows.map((row) => row[0])).toEqual(['agent-a']);
    expect(r.incidentRows.length).toBe(m.deny);
    expect(r.incidentRows.every((row) => row[3] === 'agent-a')).toBe(true);
    expect(errors).toEqual([]);
    await page.screenshot({ path: join(SCREENSHOTS, 'dashboard-scoped.png'), fullPage: true });
    await page.close();
  });

  it('lists the approvals waiting for a person, newest first, with what to decide on and the command to approve, as text', async () => {
    const { page, errors } = await signedIn(TOKENS.root);
    const r = await rendered(page);
    const memoHead = '{"amount":950,"memo":"';
    expect(r.approvalCount).toBe('(3)');
    expect(r.approvalRows).toEqual([
      // Secrets redacted; the caller's markup shown as the text it is.
      approvalRow(asked.bot, 'bot', `{"amount":700,"note":"${HTML_NOTE}","password":"[REDACTED]"}`),
      // Whole: an agent cannot push what matters past a cut.
      approvalRow(asked.aliceLong, 'agent-a', `${memoHead}${LONG_MEMO}"}`),
      approvalRow(asked.alice, 'agent-a', '{"amount":900}'),
    ]);
    expect(r.approvalCommands).toEqual([asked.bot, asked.aliceLong, asked.alice].map(approveCommand));
    expect(r.approvalElements).toBe(0);
    expect(errors).toEqual([]);
    await page.locator('#approvals').screenshot({ path: join(SCREENSHOTS, 'approvals.png') });
    await page.close();
  });

  it("shows a caller bound to one agent only the approvals of its own agents and calls, not another agent's", async () => {
    const { page, errors } = await signedIn(TOKENS.alice);
    const r = await rendered(page);
    expect(r.approvalCount).toBe('(2)');
    expect(r.approvalRows.map((row) => row[0])).toEqual([asked.aliceLong, asked.alice]);
    expect(await page.textContent('#approvals')).not.toContain(asked.bot);
    expect(errors).toEqual([]);
    await page.close();
    expect(await pendingNames(TOKENS.bot)).toEqual([asked.bot]);
  });

  it('an approval decided with the command the page shows (or denied with the CLI) leaves the list', async () => {
    const { page, errors } = await signedIn(TOKENS.root);
    const command = (await rendered(page)).approvalCommands.find((c) => c.includes(asked.alice))!;
    expect(command).toBe(approveCommand(asked.alice));
    const [program, ...args] = command.split(' ');
    expect(program).toBe('policyguard');
    const approved = await runCli(args);
    expect(approved.code, approved.stderr).toBe(0);
    expect(approved.stdout).toMatch(new RegExp(`^approval ${asked.alice} approved by local:`));
    const denied = await runCli(['approvals', 'deny', asked.aliceLong, '--reason', 'too long a memo', '--data-dir', dataDir]);
    expect(denied.code, denied.stderr).toBe(0);
    // The server sees decision files through its folder watch.
    await eventually(() => pendingNames(TOKENS.root), (names) => names.length === 1, 'the decided approvals to leave the pending list');

    await page.reload();
    await signIn(page, TOKENS.root);
    const admin = await rendered(page);
    expect(admin.approvalCount).toBe('(1)');
    expect(admin.approvalRows.map((row) => row[0])).toEqual([asked.bot]);
    expect(admin.approvalCommands).toEqual([approveCommand(asked.bot)]);
    await page.reload();
    await signIn(page, TOKENS.alice);
    const alice = await rendered(page);
    expect(alice.approvalCount).toBe('(0)');
    expect(alice.approvalRows).toEqual([['No approvals waiting.']]);
    expect(alice.approvalCommands).toEqual([]);
    expect(errors).toEqual([]);
    await page.close();
  });

  it('the data endpoint needs a valid token; the page itself carries no data', async () => {
    const api = `${pg.url}/ui/api/dashboard?range=24h`;
    const none = await fetch(api);
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toMatch(/^Bearer /);
    expect((await fetch(api, { headers: { authorization: 'Bearer wrong' } })).status).toBe(401);
    const ok = await fetch(api, { headers: { authorization: `Bearer ${TOKENS.root}` } });
    expect(ok.status).toBe(200);
    expect(((await ok.json()) as any).metrics.total_actions).toBe(made.all.allow + made.all.deny + made.all.require_approval);
    const html = await (await fetch(`${pg.url}/ui/`)).text();
    expect(html).toContain('data-auth="token"');
    expect(html).not.toMatch(/drop_table|agent-a/);
    expect((await fetch(`${api.replace('24h', 'forever')}`, { headers: { authorization: `Bearer ${TOKENS.root}` } })).status).toBe(400);
  });
});
