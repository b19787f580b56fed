/**
 * Offline evaluation for CI of policy repositories (like Gatekeeper's gator): load a folder of
 * manifests, compile, evaluate one action. Any manifest error fails the check: a policy repo
 * with a broken file should not pass CI.
 */
import { PolicySnapshot } from '../engine/snapshot.js';
import { DEFAULT_ENGINE_OPTIONS, type ActionRequest, type Decision, type EngineOptions } from '../engine/types.js';
import { loadManifestDir } from '../store/standalone.js';

export type CheckResult = { ok: true; decision: Decision } | { ok: false; errors: string[] };

/**
 * The policies' answer, as `serve --standalone` gives it with the same `--default-decision` and
 * `--unknown-agent-trust`. Not the identity step (docs/decisions.md, §4): that needs a caller,
 * so an id that differs from a registered one only in case, which serve refuses, is judged
 * here as an unregistered agent.
 */
export async function checkAction(input: { configDir: string; request: ActionRequest; options?: Partial<Pick<EngineOptions, 'defaultDecision' | 'unknownAgentTrust'>> }): Promise<CheckResult> {
  const { agents, policies, errors, describe } = await loadManifestDir(input.configDir);
  if (errors.length > 0) return { ok: false, errors };
  // A CI job pointed at the wrong folder (or one whose files are all hidden) would pass on the default alone.
  if (agents.length === 0 && policies.length === 0) {
    return { ok: false, errors: [`${input.configDir}: no GuardPolicy or GuardAgent in this folder (hidden names and other projects' kinds are skipped), so only --default-decision would decide; point --config-dir at the manifests`] };
  }
  const snapshot = PolicySnapshot.compile({ agents, policies }, { ...DEFAULT_ENGINE_OPTIONS, ...input.options });
  if (snapshot.problems.length > 0) return { ok: false, errors: snapshot.problems.map(describe) };
  return { ok: true, decision: snapshot.evaluate(input.request) };
}
