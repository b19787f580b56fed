/**
 * What an authenticated caller may do (docs/decisions.md, "Identity"):
 * - act as the GuardAgents whose `spec.identities` name it, and only as them (the MCP tools
 *   decide what an unbound caller's unknown agent id gets, see `--unknown-agents`);
 * - use the admin tools (register_agent, create_policy, suspension) when it is bound to an
 *   admin-trust agent, or, in kubernetes mode, when RBAC lets it create the object itself
 *   (SubjectAccessReview) — such a caller could `kubectl apply` it anyway;
 * - grant trust high or admin only with an agent of that trust, or RBAC `grant` on
 *   `trustlevels/<level>` (the verb the chart's admission policy checks for kubectl);
 * - read every agent's audit records with admin trust or RBAC `get` on `auditlogs`.
 * Under `--auth none` nothing is enforced: every caller is "anonymous" and may do everything.
 */
import { AuthorizationV1Api, type KubeConfig } from '@kubernetes/client-node';
import { GROUP, trustRank, type TrustLevel } from '../api/schemas.js';
import type { CompiledAgent } from '../engine/compile.js';
import type { PolicySnapshot } from '../engine/snapshot.js';
import { describeKubeError } from '../kube/client.js';
import type { Logger } from '../log.js';
import type { Principal } from './authenticate.js';

/** A write that needs admin rights, as Kubernetes RBAC would name it. */
export interface AdminAction {
  verb: 'create' | 'patch';
  resource: 'guardagents' | 'guardpolicies' | 'guardagents/status';
  namespace: string | undefined;
}

/**
 * Made-up resources of group policyguard.dev that exist only for RBAC checks (no API serves
 * them): `grant` on `trustlevels/<level>` lets a subject give GuardAgents that trust level (the
 * chart's ValidatingAdmissionPolicy checks the same verb on kubectl writes), `get` on
 * `auditlogs` lets it read every agent's audit records. See docs/decisions.md, "Identity".
 */
type RbacAction = { verb: AdminAction['verb'] | 'get' | 'grant'; resource: AdminAction['resource'] | 'auditlogs' | 'trustlevels'; namespace?: string | undefined; name?: string };

export type AdminCheck = { ok: true; trust: TrustLevel; via: 'none' | 'trust' | 'rbac' } | { ok: false; reason: string };
export type Check = { ok: true } | { ok: false; reason: string };

export interface Authorizer {
  /** False under `--auth none`: identities are not checked. */
  readonly enforcing: boolean;
  /** The agents `principal` may act as. */
  boundAgents(principal: Principal, snapshot: PolicySnapshot): readonly CompiledAgent[];
  mayActAs(principal: Principal, agent: CompiledAgent): boolean;
  admin(principal: Principal, snapshot: PolicySnapshot, action: AdminAction): Promise<AdminCheck>;
  /**
   * May `principal` give an agent in `namespace` trust `level`? Low and medium need nothing
   * beyond the write itself; high and admin need a bound agent of at least that trust, or RBAC
   * `grant` on `trustlevels/<level>`.
   */
  mayGrant(principal: Principal, snapshot: PolicySnapshot, level: TrustLevel, namespace: string | undefined): Promise<Check>;
  /** True when `principal` may read every agent's audit records (admin trust, or RBAC `get auditlogs`). */
  mayReadAll(principal: Principal, snapshot: PolicySnapshot): Promise<boolean>;
  /** Whether RBAC itself (a SubjectAccessReview; kubernetes mode) allows `action`, whatever trust the caller has. */
  rbacAllows(principal: Principal, action: AdminAction): Promise<boolean>;
}

function identityMatches(principal: Principal, agent: CompiledAgent): boolean {
  return (agent.source.spec.identities ?? []).some((id) =>
    id.user !== undefined
      ? id.user === principal.subject
      : id.serviceAccount !== undefined && id.serviceAccount.namespace === principal.serviceAccount?.namespace && id.serviceAccount.name === principal.serviceAccount?.name,
  );
}

export function openAuthorizer(): Authorizer {
  return {
    enforcing: false,
    boundAgents: () => [],
    mayActAs: () => true,
    admin: async () => ({ ok: true, trust: 'admin', via: 'none' }),
    mayGrant: async () => ({ ok: true }),
    mayReadAll: async () => true,
    rbacAllows: async () => false,
  };
}

export interface IdentityAuthorizerOptions {
  /** Kubernetes mode: ask RBAC (SubjectAccessReview) when trust alone does not allow. */
  kubeConfig?: KubeConfig;
  cacheTtlMs?: number;
  log: Logger;
}

/**
 * Enforcing authorizer.
 *
 * @example const authz = identityAuthorizer({ log }); authz.mayActAs(principal, agent);
 */
export function identityAuthorizer(opts: IdentityAuthorizerOptions): Authorizer {
  // Bindings are computed once per snapshot: snapshots are immutable.
  const bindings = new WeakMap<PolicySnapshot, Map<string, CompiledAgent[]>>();
  const sar = opts.kubeConfig?.makeApiClient(AuthorizationV1Api);
  const sarCache = new Map<string, { allowed: boolean; expires: number }>();

  const bound = (principal: Principal, snapshot: PolicySnapshot): CompiledAgent[] => {
    let bySubject = bindings.get(snapshot);
    if (!bySubject) {
      bySubject = new Map();
      bindings.set(snapshot, bySubject);
    }
    let list = bySubject.get(principal.subject);
    if (!list) {
      list = [...snapshot.agents()].filter((a) => identityMatches(principal, a));
      bySubject.set(principal.subject, list);
    }
    return list;
  };

  const rbacAllows = async (principal: Principal, action: RbacAction): Promise<boolean> => {
    if (!sar) return false;
    const key = `${principal.subject}\0${action.verb}\0${action.resource}\0${action.namespace ?? ''}\0${action.name ?? ''}`;
    const hit = sarCache.get(key);
    if (hit && hit.expires > Date.now()) return hit.allowed;
    const [resource, subresource] = action.resource.split('/');
    try {
      const review = await sar.createSubjectAccessReview({
        body: {
          apiVersion: 'authorization.k8s.io/v1',
          kind: 'SubjectAccessReview',
          spec: {
            user: principal.subject,
            groups: principal.groups,
            resourceAttributes: {
              group: GROUP,
              resource,
              ...(subresource ? { subresource } : {}),
              ...(action.name ? { name: action.name } : {}),
              verb: action.verb,
              ...(action.namespace ? { namespace: action.namespace } : {}),
            },
          },
        },
      });
      const allowed = review.status?.allowed === true;
      sarCache.set(key, { allowed, expires: Date.now() + (opts.cacheTtlMs ?? 10_000) });
      return allowed;
    } catch (err) {
      opts.log.warn('SubjectAccessReview failed; treating as not allowed', { error: describeKubeError(err) });
      return false;
    }
  };

  /** The highest trust of the unsuspended agents `principal` may act as. */
  const bestTrust = (principal: Principal, snapshot: PolicySnapshot): TrustLevel | undefined =>
    bound(principal, snapshot)
      .filter((a) => a.suspension === undefined)
      .reduce<TrustLevel | undefined>((t, a) => (t === undefined || trustRank(a.trust) > trustRank(t) ? a.trust : t), undefined);

  return {
    enforcing: true,
    boundAgents: bound,
    mayActAs: identityMatches,
    async mayGrant(principal, snapshot, level, namespace) {
      if (trustRank(level) < trustRank('high')) return { ok: true };
      const best = bestTrust(principal, snapshot);
      if (best !== undefined && trustRank(best) >= trustRank(level)) return { ok: true };
      // An admin agent administers PolicyGuard everywhere, so only a cluster-wide grant counts
      // for admin (the chart's admission policy asks the same question).
      if (await rbacAllows(principal, { verb: 'grant', resource: 'trustlevels', name: level, namespace: level === 'admin' ? undefined : namespace })) return { ok: true };
      return {
        ok: false,
        reason:
          `caller '${principal.subject}' may not grant trust level '${level}': ${best ? `its highest trust level is '${best}'` : 'it is bound to no GuardAgent'}` +
          `${sar ? ` and RBAC does not let it 'grant' trustlevels '${level}' (group ${GROUP})` : ''}`,
      };
    },
    rbacAllows,
    async mayReadAll(principal, snapshot) {
      return bestTrust(principal, snapshot) === 'admin' || (await rbacAllows(principal, { verb: 'get', resource: 'auditlogs' }));
    },
    async admin(principal, snapshot, action) {
      const best = bestTrust(principal, snapshot);
      if (best === 'admin') return { ok: true, trust: 'admin', via: 'trust' };
      if (await rbacAllows(principal, action)) return { ok: true, trust: 'admin', via: 'rbac' };
      const held = best ? `its highest trust level is '${best}'` : 'it is bound to no GuardAgent';
      return {
        ok: false,
        reason: `caller '${principal.subject}' may not ${action.verb} ${action.resource}: ${held}; this needs an admin-trust agent identity${sar ? ' or RBAC permission for it' : ''}`,
      };
    },
  };
}
