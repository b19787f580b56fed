/**
 * A minimal Prometheus registry: labelled counters and callback gauges, rendered in the text
 * exposition format at /metrics. Names follow `policyguard_<noun>_<unit>`.
 */
type Labels = Record<string, string>;

function labelKey(labels: Labels): string {
  const keys = Object.keys(labels).sort();
  if (keys.length === 0) return '';
  const esc = (v: string) => v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
  return `{${keys.map((k) => `${k}="${esc(labels[k]!)}"`).join(',')}}`;
}

export class Counter {
  private readonly values = new Map<string, number>();
  constructor(
    readonly name: string,
    readonly help: string,
  ) {}

  inc(labels: Labels = {}, by = 1): void {
    const key = labelKey(labels);
    this.values.set(key, (this.values.get(key) ?? 0) + by);
  }

  /** Current value for exactly these labels (0 when never incremented). */
  get(labels: Labels = {}): number {
    return this.values.get(labelKey(labels)) ?? 0;
  }

  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} counter`];
    for (const [k, v] of this.values) lines.push(`${this.name}${k} ${v}`);
    return lines.join('\n');
  }
}

export class Gauge {
  constructor(
    readonly name: string,
    readonly help: string,
    private readonly read: () => number | Array<[Labels, number]>,
  ) {}

  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} gauge`];
    const v = this.read();
    if (typeof v === 'number') lines.push(`${this.name} ${v}`);
    else for (const [labels, n] of v) lines.push(`${this.name}${labelKey(labels)} ${n}`);
    return lines.join('\n');
  }
}

export class Metrics {
  private readonly all: Array<Counter | Gauge> = [];

  readonly decisions = this.counter('policyguard_decisions_total', 'Decisions made, by decision (allow, deny, require_approval).');
  readonly auditFindings = this.counter('policyguard_audit_findings_total', 'Audit-mode rule matches (dry-run findings), by policy.');
  readonly incidents = this.counter('policyguard_incidents_total', 'Incidents recorded, by type and severity.');
  readonly toolCalls = this.counter('policyguard_tool_calls_total', 'MCP tool calls, by tool and outcome (ok, error).');
  readonly autoRegistrations = this.counter('policyguard_auto_registrations_total', 'Unknown agents registered automatically, by outcome.');
  readonly auditUnavailableDenials = this.counter(
    'policyguard_audit_unavailable_denials_total',
    'Decisions denied because the audit log could not take their record (--audit-failure-mode closed).',
  );

  counter(name: string, help: string): Counter {
    const c = new Counter(name, help);
    this.all.push(c);
    return c;
  }

  gauge(name: string, help: string, read: () => number | Array<[Labels, number]>): Gauge {
    const g = new Gauge(name, help, read);
    this.all.push(g);
    return g;
  }

  render(): string {
    return this.all.map((m) => m.render()).join('\n') + '\n';
  }
}
