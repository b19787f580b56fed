/**
 * The PolicyGuard API, `policyguard.dev/v1alpha1`: zod schemas for GuardAgent and GuardPolicy.
 *
 * These schemas are the single source of truth. The CRDs in `crds/` are generated from them
 * (`npm run crds`, see ./crd.ts), the standalone store validates manifests with them, and the
 * MCP tools build objects that must pass them. Spec schemas are strict: an unknown key (a typo
 * such as `match: {tool: …}`) is an error, never silently dropped, because a dropped condition
 * widens a rule; `metadata` and `status` stay open to what the API server adds. The CRDs keep
 * unknown spec fields rather than pruning them, so a typo reaches this check in Kubernetes mode
 * too (see ./crd.ts). Cross-field rules are declared once with
 * {@link crossFieldRule}, which yields both a zod refinement and the CEL
 * `x-kubernetes-validations` entry the API server enforces.
 */
import { z } from 'zod';

export const GROUP = 'policyguard.dev';
export const VERSION = 'v1alpha1';
export const API_VERSION = `${GROUP}/${VERSION}`;

/** Trust levels, lowest first. Their order is their rank. */
export const TRUST_LEVELS = ['low', 'medium', 'high', 'admin'] as const;
export const TrustLevelSchema = z.enum(TRUST_LEVELS);
export type TrustLevel = z.infer<typeof TrustLevelSchema>;

/** Rank of a trust level: low=1 … admin=4 (the seed's scores). */
export function trustRank(level: TrustLevel): number {
  return TRUST_LEVELS.indexOf(level) + 1;
}

const CEL_TRUST_RANK = `{${TRUST_LEVELS.map((l, i) => `'${l}': ${i + 1}`).join(', ')}}`;

/**
 * A validation rule stated once: `predicate` runs in zod (standalone manifests, MCP input) and
 * `cel` runs in the API server (kubectl apply). Keep the two saying the same thing.
 */
interface CrossFieldRule<T> {
  cel: string;
  message: string;
  predicate: (value: T) => boolean;
}

function crossFieldRule<T>(rule: CrossFieldRule<T>): CrossFieldRule<T> {
  return rule;
}

/** Attach cross-field rules to an object schema: zod refinements plus CEL metadata for the CRD. */
function withRules<S extends z.ZodType>(schema: S, rules: CrossFieldRule<z.output<S>>[]) {
  let refined = schema.meta({
    'x-kubernetes-validations': rules.map((r) => ({ rule: r.cel, message: r.message })),
  });
  for (const r of rules) refined = refined.refine(r.predicate, { message: r.message }) as typeof refined;
  return refined;
}

// Length bounds keep objects small and keep the API server's CEL cost estimate within budget.
const NAME_MAX = 253;
const GLOB_MAX = 253;
const LIST_MAX = 64;

const Glob = z.string().min(1).max(GLOB_MAX);
const GlobList = z.array(Glob).max(LIST_MAX);
/** An empty list in a rule's match matches no call: a deny with `tools: []` would deny nothing. */
const EMPTY_MATCH = 'an empty list matches no call, so the rule would never apply; list at least one value, or remove the condition';
const MatchGlobList = GlobList.min(1, EMPTY_MATCH);
const ShortText = z.string().max(1024);

/**
 * A map of strings with keys of at most NAME_MAX characters and at most LIST_MAX entries. A CRD
 * cannot bound a key's length with a schema keyword, so that is a CEL rule there, and the API
 * server only accepts its cost with the number of entries bounded (maxProperties).
 */
function stringMap(valueMax: number) {
  return withRules(z.record(z.string(), z.string().max(valueMax)).meta({ maxProperties: LIST_MAX }), [
    crossFieldRule({
      cel: `self.all(k, size(k) <= ${NAME_MAX})`,
      message: `keys must be at most ${NAME_MAX} characters`,
      // Characters as CEL's size() and zod's max() count them: code points, not UTF-16 units.
      predicate: (m) => Object.keys(m).every((k) => [...k].length <= NAME_MAX),
    }),
  ]).refine((m) => Object.keys(m).length <= LIST_MAX, { message: `at most ${LIST_MAX} entries` });
}

/** A dot path into the call's parameters, e.g. `table` or `query.options.limit`. */
const ArgumentPath = z
  .string()
  .min(1)
  .max(NAME_MAX)
  .regex(/^[^.]+(\.[^.]+)*$/, 'path must be dot-separated keys, e.g. "query.table"');

export const ARGUMENT_OPERATORS = [
  'Equals',
  'NotEquals',
  'In',
  'NotIn',
  'Glob',
  'Exists',
  'DoesNotExist',
  'GreaterThan',
  'LessThan',
] as const;
export const ArgumentOperatorSchema = z.enum(ARGUMENT_OPERATORS);
export type ArgumentOperator = z.infer<typeof ArgumentOperatorSchema>;

const NUMBER_PATTERN = '^-?[0-9]+([.][0-9]+)?$';

export const ArgumentConditionSchema = withRules(
  z.strictObject({
    path: ArgumentPath.describe('Dot path into the call parameters, e.g. "table" or "options.limit".'),
    operator: ArgumentOperatorSchema,
    values: z
      .array(z.string().max(256))
      .max(LIST_MAX)
      .optional()
      .describe('Compared as strings; GreaterThan/LessThan take one number.'),
  }),
  [
    crossFieldRule({
      cel: "self.operator in ['Exists', 'DoesNotExist'] ? (!has(self.values) || size(self.values) == 0) : (has(self.values) && size(self.values) > 0)",
      message: 'values must be empty for Exists/DoesNotExist and non-empty for every other operator',
      predicate: (a) =>
        a.operator === 'Exists' || a.operator === 'DoesNotExist'
          ? (a.values ?? []).length === 0
          : (a.values ?? []).length > 0,
    }),
    crossFieldRule({
      cel: `!(self.operator in ['Equals', 'NotEquals', 'GreaterThan', 'LessThan']) || (has(self.values) && size(self.values) == 1)`,
      message: 'Equals, NotEquals, GreaterThan and LessThan take exactly one value',
      predicate: (a) =>
        !['Equals', 'NotEquals', 'GreaterThan', 'LessThan'].includes(a.operator) || (a.values ?? []).length === 1,
    }),
    crossFieldRule({
      cel: `!(self.operator in ['GreaterThan', 'LessThan']) || (has(self.values) && size(self.values) > 0 && self.values[0].matches('${NUMBER_PATTERN}'))`,
      message: 'GreaterThan and LessThan need a number, e.g. "100" or "2.5"',
      predicate: (a) =>
        !['GreaterThan', 'LessThan'].includes(a.operator) || new RegExp(NUMBER_PATTERN).test(a.values?.[0] ?? ''),
    }),
  ],
);
export type ArgumentCondition = z.infer<typeof ArgumentConditionSchema>;

export const RuleMatchSchema = withRules(
  z.strictObject({
    tools: MatchGlobList.optional().describe('Globs over the target (tool name), case-insensitive.'),
    actionTypes: MatchGlobList.optional().describe('Globs over action_type, e.g. "tool_call".'),
    agents: MatchGlobList.optional().describe('Globs over agent ids.'),
    upstreams: MatchGlobList.optional().describe(
      'Globs over "namespace/name" of the GuardUpstream a call goes through (the MCP gateway); a call that goes through none (validate_action) does not match.',
    ),
    trustLevelBelow: TrustLevelSchema.optional().describe('Matches agents whose trust is below this level.'),
    trustLevelAtLeast: TrustLevelSchema.optional().describe('Matches agents whose trust is at least this level.'),
    arguments: z.array(ArgumentConditionSchema).min(1, EMPTY_MATCH).max(16).optional().describe('Conditions on the call parameters.'),
  }),
  [
    crossFieldRule({
      cel: `!has(self.trustLevelBelow) || !has(self.trustLevelAtLeast) || ${CEL_TRUST_RANK}[self.trustLevelBelow] > ${CEL_TRUST_RANK}[self.trustLevelAtLeast]`,
      message: 'trustLevelBelow must be above trustLevelAtLeast, or no agent can match',
      predicate: (m) =>
        m.trustLevelBelow === undefined ||
        m.trustLevelAtLeast === undefined ||
        trustRank(m.trustLevelBelow) > trustRank(m.trustLevelAtLeast),
    }),
    crossFieldRule({
      cel: `!has(self.trustLevelBelow) || self.trustLevelBelow != 'low'`,
      message: 'trustLevelBelow: low matches no agent (low is the lowest trust level); for low-trust agents write trustLevelBelow: medium',
      predicate: (m) => m.trustLevelBelow !== 'low',
    }),
  ],
);
export type RuleMatch = z.infer<typeof RuleMatchSchema>;

export const RULE_ACTIONS = ['allow', 'deny', 'require_approval'] as const;
export const RuleActionSchema = z.enum(RULE_ACTIONS);
export type RuleAction = z.infer<typeof RuleActionSchema>;

/** How long an approval request stays valid, e.g. 30m, 4h, 2d. */
export const ApprovalTtlSchema = z.string().regex(/^[1-9][0-9]{0,4}(m|h|d)$/, 'ttl must be a duration like 30m, 4h or 2d');

export const RuleSchema = withRules(
  z.strictObject({
    name: z
      .string()
      .max(63)
      .regex(/^[a-zA-Z0-9]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?$/, 'rule name must be alphanumeric with - _ .')
      .optional()
      .describe('Defaults to rule-<index>.'),
    match: RuleMatchSchema.default({}).describe('Every present condition must hold; empty matches every call.'),
    action: RuleActionSchema,
    message: ShortText.optional().describe('Returned as the reason when this rule decides.'),
    approval: z
      .strictObject({
        ttl: ApprovalTtlSchema.optional().describe('How long the GuardApproval this rule asks for stays valid, decided or not; default --approval-ttl (1h).'),
      })
      .optional()
      .describe('For require_approval rules: the GuardApproval asked for.'),
  }),
  [
    crossFieldRule({
      cel: "!has(self.approval) || self.action == 'require_approval'",
      message: 'approval settings belong to require_approval rules only',
      predicate: (r) => r.approval === undefined || r.action === 'require_approval',
    }),
  ],
);
export type Rule = z.infer<typeof RuleSchema>;

export const ENFORCEMENTS = ['Enforce', 'Audit', 'Disabled'] as const;
export const EnforcementSchema = z.enum(ENFORCEMENTS);
export type Enforcement = z.infer<typeof EnforcementSchema>;

const LabelSelectorSchema = z.strictObject({
  matchLabels: stringMap(63).optional(),
  matchExpressions: z
    .array(
      withRules(
        z.strictObject({
          key: z.string().min(1).max(NAME_MAX),
          operator: z.enum(['In', 'NotIn', 'Exists', 'DoesNotExist']),
          values: z.array(z.string().max(63)).max(LIST_MAX).optional(),
        }),
        [
          // As Kubernetes label selectors require: `In: []` would select no agent, so a deny would apply to none.
          crossFieldRule({
            cel: "self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0) : (!has(self.values) || size(self.values) == 0)",
            message: 'values must be non-empty for In and NotIn and empty for Exists and DoesNotExist',
            predicate: (e) => (e.operator === 'In' || e.operator === 'NotIn' ? (e.values ?? []).length > 0 : (e.values ?? []).length === 0),
          }),
        ],
      ),
    )
    .max(16)
    .optional(),
});
export type LabelSelector = z.infer<typeof LabelSelectorSchema>;

export const GuardPolicySpecSchema = z.strictObject({
  description: ShortText.optional(),
  enforcement: EnforcementSchema.default('Enforce').describe('Audit = dry run: matches are reported, never enforced.'),
  priority: z.number().int().min(0).max(1_000_000).default(100).describe('Higher first; orders reasons, never overrides deny.'),
  agentSelector: LabelSelectorSchema.optional().describe('Over GuardAgent labels; absent = every agent in scope.'),
  rules: z.array(RuleSchema).min(1).max(256),
});
export type GuardPolicySpec = z.infer<typeof GuardPolicySpecSchema>;

const ServiceAccountRef = z.strictObject({
  namespace: z.string().min(1).max(63),
  name: z.string().min(1).max(NAME_MAX),
});

export const AgentIdentitySchema = withRules(
  z.strictObject({
    serviceAccount: ServiceAccountRef.optional().describe('A Kubernetes ServiceAccount (auth mode kubernetes).'),
    user: z.string().min(1).max(NAME_MAX).optional().describe('A subject from the static token file, e.g. "token:ci-bot".'),
  }),
  [
    crossFieldRule({
      cel: 'has(self.serviceAccount) != has(self.user)',
      message: 'an identity names exactly one of serviceAccount or user',
      predicate: (i) => (i.serviceAccount === undefined) !== (i.user === undefined),
    }),
  ],
);
export type AgentIdentity = z.infer<typeof AgentIdentitySchema>;

/** What callers send as agent_id. Wider than a Kubernetes name: the seed allowed free-form ids. */
export const AgentIdSchema = z
  .string()
  .min(1)
  .max(NAME_MAX)
  .regex(/^[A-Za-z0-9][A-Za-z0-9._:@/-]*$/, 'agent id must start alphanumeric and use only letters, digits and . _ : @ / -');

export const GuardAgentSpecSchema = z.strictObject({
  agentId: AgentIdSchema.optional().describe('What callers send as agent_id; defaults to metadata.name.'),
  displayName: z.string().max(NAME_MAX).optional(),
  description: ShortText.optional(),
  trustLevel: TrustLevelSchema.default('low'),
  suspended: z.boolean().default(false).describe('Set by humans or GitOps; automatic suspension lives in status.'),
  allowedTools: GlobList.default([]).describe('Empty or ["*"] = no restriction.'),
  deniedTools: GlobList.default([]),
  attributes: stringMap(1024).optional().describe('Free-form strings (the seed’s metadata).'),
  identities: z.array(AgentIdentitySchema).max(16).optional().describe('Who may act as this agent.'),
  rateLimit: z
    .strictObject({
      requests: z.number().int().min(1).max(1_000_000),
      per: z.string().regex(/^[1-9][0-9]{0,4}(s|m|h)$/, 'per must be a duration like 1s, 1m or 1h'),
    })
    .optional()
    .describe('Decisions per window (per replica); beyond it validate_action denies and raises rate_limit_exceeded.'),
});
export type GuardAgentSpec = z.infer<typeof GuardAgentSpecSchema>;

/** metav1.Condition. */
export const ConditionSchema = z.object({
  type: z.string().max(316),
  status: z.enum(['True', 'False', 'Unknown']),
  observedGeneration: z.number().int().min(0).optional(),
  lastTransitionTime: z.string(),
  reason: z.string().max(1024),
  message: z.string().max(32768),
});
export type Condition = z.infer<typeof ConditionSchema>;

const ConditionsSchema = z
  .array(ConditionSchema)
  .max(8)
  .meta({ 'x-kubernetes-list-type': 'map', 'x-kubernetes-list-map-keys': ['type'] });

export const SuspensionSchema = z.object({
  since: z.string().describe('RFC 3339; ends when annotation policyguard.dev/resume holds a later time not ahead of the server clock (or up to 5 minutes ahead, when more than 5 minutes after this).'),
  reason: ShortText,
  incidentId: z.string().max(64).optional(),
});
export type Suspension = z.infer<typeof SuspensionSchema>;

export const GuardAgentStatusSchema = z.object({
  observedGeneration: z.number().int().min(0).optional(),
  conditions: ConditionsSchema.optional(),
  suspension: SuspensionSchema.optional(),
});
export type GuardAgentStatus = z.infer<typeof GuardAgentStatusSchema>;

export const GuardPolicyStatusSchema = z.object({
  observedGeneration: z.number().int().min(0).optional(),
  conditions: ConditionsSchema.optional(),
});
export type GuardPolicyStatus = z.infer<typeof GuardPolicyStatusSchema>;

/** DNS-1123 subdomain, as Kubernetes requires for metadata.name. */
export const ObjectNameSchema = z
  .string()
  .min(1)
  .max(NAME_MAX)
  .regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/, 'metadata.name must be a lowercase DNS-1123 name');

/** The part of ObjectMeta we read; everything else the API server adds is kept as is. */
export const ObjectMetaSchema = z.looseObject({
  name: ObjectNameSchema,
  namespace: z.string().max(63).optional(),
  uid: z.string().optional(),
  generation: z.number().int().optional(),
  resourceVersion: z.string().optional(),
  creationTimestamp: z.string().optional(),
  labels: z.record(z.string(), z.string()).optional(),
  annotations: z.record(z.string(), z.string()).optional(),
});
export type ObjectMeta = z.infer<typeof ObjectMetaSchema>;

/**
 * A kind of ours as the API server stores it: apiVersion, kind, metadata, spec and an optional
 * status, and nothing else: a field indented one level too little (`deniedTools` beside `spec`)
 * is an error, never dropped (the CRDs keep such fields for this check to see, see ./crd.ts).
 */
function resource<K extends string, Spec extends z.ZodType, Status extends z.ZodType>(kind: K, spec: Spec, status: Status) {
  return z.strictObject({ apiVersion: z.literal(API_VERSION), kind: z.literal(kind), metadata: ObjectMetaSchema, spec, status: status.optional() });
}

export const GuardAgentSchema = resource('GuardAgent', GuardAgentSpecSchema, GuardAgentStatusSchema);
export type GuardAgent = z.infer<typeof GuardAgentSchema>;

export const GuardPolicySchema = resource('GuardPolicy', GuardPolicySpecSchema, GuardPolicyStatusSchema);
export type GuardPolicy = z.infer<typeof GuardPolicySchema>;

/** Headers the gateway sets itself (hop-by-hop, framing, MCP's own): a GuardUpstream may not. */
export const GATEWAY_OWNED_HEADERS = ['host', 'content-length', 'connection', 'transfer-encoding', 'keep-alive', 'upgrade', 'te', 'trailer', 'mcp-session-id', 'mcp-protocol-version', 'mcp-method', 'mcp-name'];

const HeaderName = z.string().min(1).max(128).regex(/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/, 'must be an HTTP header name');

/** Where a header's value comes from: never the manifest itself. */
export const HeaderValueSourceSchema = withRules(
  z.strictObject({
    secretKeyRef: z
      .strictObject({ name: ObjectNameSchema, key: z.string().min(1).max(NAME_MAX) })
      .optional()
      .describe('A key of a Secret in the GuardUpstream\'s namespace (kubernetes mode).'),
    file: z.string().min(1).max(4096).optional().describe('A file whose content is the value (standalone mode), e.g. a mounted Secret.'),
    env: z
      .string()
      .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an environment variable name')
      .optional()
      .describe('An environment variable of the server (standalone mode).'),
  }),
  [
    crossFieldRule({
      cel: '(has(self.secretKeyRef) ? 1 : 0) + (has(self.file) ? 1 : 0) + (has(self.env) ? 1 : 0) == 1',
      message: 'valueFrom names exactly one of secretKeyRef, file or env',
      predicate: (v) => [v.secretKeyRef, v.file, v.env].filter((x) => x !== undefined).length === 1,
    }),
  ],
);
export type HeaderValueSource = z.infer<typeof HeaderValueSourceSchema>;

/**
 * http(s); a host name of letters, digits, `-`, `_` and dots, or an IPv6 address in brackets;
 * an optional port up to 65535; then a path, query and fragment of printable ASCII. No whitespace, no
 * control characters, nothing beyond ASCII (percent-encode it; a host in punycode), no user
 * information, and nothing in the host that a URL parser reads differently from a person:
 * `\` ends a host for `new URL()` (`http://evil\.good.example` goes to `evil`) and `%65` in a
 * host is decoded. Written with ranges only, because the API server checks the same pattern with
 * Go's RE2, whose `\s` is not JavaScript's (tests/cluster/crd-patterns.test.ts asks the API
 * server about each character).
 */
const UPSTREAM_URL = /^https?:\/\/(([A-Za-z0-9_-]+\.)*[A-Za-z0-9_-]+\.?|\[[0-9A-Fa-f:.]+(%25[0-9A-Za-z._~-]+)?\])(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4}))?([/?#][!-~]*)?$/;

export const GuardUpstreamSpecSchema = z.strictObject({
  description: ShortText.optional(),
  url: z
    .string()
    .max(2048)
    .regex(UPSTREAM_URL, 'url must be http:// or https://, a host name or [IPv6 address], an optional port, then printable ASCII (percent-encode anything else); no user:password@ (send credentials as headers)')
    .describe('The upstream MCP server\'s Streamable HTTP endpoint, e.g. http://github-mcp.tools:8080/mcp.'),
  headers: z
    .array(
      withRules(
        z.strictObject({
          name: HeaderName,
          valueFrom: HeaderValueSourceSchema,
          prefix: z.string().max(64).optional().describe('Put before the value, e.g. "Bearer ".'),
        }),
        [
          crossFieldRule({
            cel: `!(self.name.lowerAscii() in [${GATEWAY_OWNED_HEADERS.map((h) => `'${h}'`).join(', ')}])`,
            message: `the gateway sets these headers itself: ${GATEWAY_OWNED_HEADERS.join(', ')}`,
            predicate: (h) => !GATEWAY_OWNED_HEADERS.includes(h.name.toLowerCase()),
          }),
        ],
      ),
    )
    .max(16)
    .default([])
    .describe('Headers sent to the upstream with every request; the caller\'s own credentials never are.'),
  timeout: z
    .string()
    .regex(/^[1-9][0-9]{0,5}(ms|s|m)$/, 'timeout must be a duration like 500ms, 30s or 2m')
    .default('30s')
    .describe('Longest wait for the upstream\'s answer (to the end of a streamed one) before the call fails; a GET stream of the server\'s own messages only waits for its start.'),
  allowedNamespaces: z
    .array(z.string().regex(/^(\*|[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)$/, 'must be a namespace name, or * for every namespace'))
    .max(64)
    .default([])
    .describe(
      'Namespaces whose agents may use this upstream besides its own; ["*"] for every namespace. The agent\'s own namespace\'s policies (and cluster-wide ones) decide its calls, made with this upstream\'s credentials.',
    ),
  keyMatching: z
    .enum(['CaseInsensitive', 'Exact'])
    .default('CaseInsensitive')
    .describe(
      'How the upstream matches JSON keys. CaseInsensitive (the default; Go\'s encoding/json, as in mcp-go): a tools/call holding two keys equal ignoring case anywhere in its params is refused, since the upstream could read either. Exact (the TypeScript and Python MCP SDKs): such keys inside arguments, _meta and task are forwarded; params\' own keys are always checked.',
    ),
});
export type GuardUpstreamSpec = z.infer<typeof GuardUpstreamSpecSchema>;

export const GuardUpstreamStatusSchema = z.object({
  observedGeneration: z.number().int().min(0).optional(),
  conditions: ConditionsSchema.optional(),
});

/** An MCP server PolicyGuard gates: every tools/call to it is decided first (the gateway). */
export const GuardUpstreamSchema = resource('GuardUpstream', GuardUpstreamSpecSchema, GuardUpstreamStatusSchema);
export type GuardUpstream = z.infer<typeof GuardUpstreamSchema>;

// ---- GuardApproval ------------------------------------------------------------------------------

/**
 * Pending → Approved | Denied | Expired; Approved → Used | Expired. Denied, Expired and Used are
 * final (docs/decisions.md, "Approvals"). An absent phase is Pending (the API server drops the
 * status of a create).
 */
export const APPROVAL_PHASES = ['Pending', 'Approved', 'Denied', 'Expired', 'Used'] as const;
export const ApprovalPhaseSchema = z.enum(APPROVAL_PHASES);
export type ApprovalPhase = z.infer<typeof ApprovalPhaseSchema>;

const Timestamp = z.string().max(64).describe('RFC 3339.');

/** Rules the CRD enforces on updates (CEL transition rules, `oldSelf`); zod sees one object at a time. */
function transitionRules<S extends z.ZodType>(schema: S, rules: { rule: string; message: string }[]): S {
  const existing = (schema.meta()?.['x-kubernetes-validations'] as unknown[] | undefined) ?? [];
  return schema.meta({ ...schema.meta(), 'x-kubernetes-validations': [...existing, ...rules] }) as S;
}

/** What is asked: exactly one agent, action, target, upstream and arguments digest. Written once by PolicyGuard. */
export const GuardApprovalSpecSchema = transitionRules(
  z.strictObject({
    agentId: AgentIdSchema.describe('The agent that asked (its agent_id).'),
    actionType: z.string().min(1).max(NAME_MAX).describe('The action_type asked for, e.g. tool_call.'),
    target: z.string().min(1).max(2048).describe('The tool (target) asked for.'),
    upstream: z.string().max(2 * NAME_MAX + 1).optional().describe('namespace/name of the GuardUpstream the call goes through (the gateway).'),
    argumentsDigest: z
      .string()
      .regex(/^(?:hmac-sha256|sha256):[0-9a-f]{64}$/, 'argumentsDigest must be hmac-sha256:<64 hex> or sha256:<64 hex>')
      .describe('HMAC-SHA256 (under a key derived from the audit key), or without one sha256, of the canonical JSON of the call arguments: an approval covers exactly these arguments.'),
    argumentsPreview: z.string().max(4096).describe('The arguments, secrets redacted, cut to 4 KiB: what the approver reads.'),
    rules: z
      .array(z.strictObject({ policy: z.string().min(1).max(2 * NAME_MAX + 1), rule: z.string().min(1).max(NAME_MAX) }))
      .min(1)
      .max(16)
      .describe('The require_approval rules that asked, as policy (namespace/name) and rule name.'),
    message: ShortText.describe('Why approval is needed: the deciding rule\'s message.'),
    revision: z.string().max(128).describe('The policy snapshot revision that asked.'),
    requestedAt: Timestamp,
    expiresAt: Timestamp.describe('After this the approval is Expired, decided or not (the rule\'s approval.ttl, default --approval-ttl).'),
    requestedBy: z.string().min(1).max(NAME_MAX).describe('The caller that asked (its authenticated subject).'),
    requesters: z
      .array(z.string().min(1).max(NAME_MAX))
      .max(32)
      .describe('Usernames that may not decide this approval: the caller and every identity bound to the agent (no self-approval).'),
  }),
  [{ rule: 'self == oldSelf', message: 'spec is immutable: an approval covers exactly one ask' }],
);
export type GuardApprovalSpec = z.infer<typeof GuardApprovalSpecSchema>;

const APPROVAL_DECISION_FIELDS = ['decidedBy', 'decidedAt', 'reason'] as const;

export const GuardApprovalStatusSchema = transitionRules(
  withRules(
    z.object({
      phase: ApprovalPhaseSchema.optional().describe('Absent means Pending.'),
      decidedBy: z.string().min(1).max(NAME_MAX).optional().describe('Who approved or denied: their Kubernetes username.'),
      decidedAt: Timestamp.optional(),
      reason: ShortText.optional().describe('Why, in the decider\'s words.'),
      usedAt: Timestamp.optional(),
      actionId: z.string().max(64).optional().describe('The decision (audit action_id) that used the approval.'),
    }),
    [
      crossFieldRule({
        cel: "!has(self.phase) || !(self.phase in ['Approved', 'Denied']) || (has(self.decidedBy) && has(self.decidedAt))",
        message: 'an Approved or Denied approval names decidedBy and decidedAt',
        predicate: (s) => s.phase === undefined || !['Approved', 'Denied'].includes(s.phase) || (s.decidedBy !== undefined && s.decidedAt !== undefined),
      }),
      crossFieldRule({
        cel: "!has(self.phase) || self.phase != 'Used' || (has(self.decidedBy) && has(self.actionId))",
        message: 'a Used approval was approved (decidedBy) and names the actionId that used it',
        predicate: (s) => s.phase !== 'Used' || (s.decidedBy !== undefined && s.actionId !== undefined),
      }),
    ],
  ),
  [
    {
      rule:
        "!has(oldSelf.phase) || oldSelf.phase == 'Pending' || self == oldSelf || (oldSelf.phase == 'Approved' && has(self.phase) && self.phase in ['Used', 'Expired'])",
      message: 'a decided approval cannot be changed: only Approved may still become Used or Expired; Denied, Expired and Used are final',
    },
    ...APPROVAL_DECISION_FIELDS.map((f) => ({
      rule: `!has(oldSelf.${f}) || (has(self.${f}) && self.${f} == oldSelf.${f})`,
      message: `status.${f} cannot change once set`,
    })),
  ],
);
export type GuardApprovalStatus = z.infer<typeof GuardApprovalStatusSchema>;

/**
 * A person's decision on one agent's ask, which `require_approval` asked for. Created by
 * PolicyGuard in the agent's namespace; decided by someone with verb `approve` on
 * guardapprovals (not the agent: the chart's admission policy); single use.
 */
export const GuardApprovalSchema = resource('GuardApproval', GuardApprovalSpecSchema, GuardApprovalStatusSchema);
export type GuardApproval = z.infer<typeof GuardApprovalSchema>;

/** Either kind the engine compiles; `kind` tells them apart. */
export type GuardObject = GuardAgent | GuardPolicy;

/** Every kind of the API group. */
export type AnyGuardObject = GuardObject | GuardUpstream;

export const LABEL_AUTO_REGISTERED = `${GROUP}/auto-registered`;
export const ANNOTATION_RESUME = `${GROUP}/resume`;
