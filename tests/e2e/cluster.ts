// What the end-to-end checks need from a cluster, whichever runs it: the one-node cluster of
// ./local-node.ts (no Docker) or kind (./kind.ts). See docs/e2e.md.

import type { KubeConfig } from '@kubernetes/client-node';

import type { ExecResult } from '../controlplane/index.js';

export interface E2ECluster {
  /** For messages: `local node (…)` or `kind (…)`. */
  description: string;
  kubeconfigPath: string;
  /** A scratch directory of this run on this machine (removed at stop). */
  workDir: string;
  kubeConfig(): KubeConfig;
  kubectl(args: string[], input?: string): Promise<ExecResult>;
  /** The image built from the Dockerfile, as the chart's image.repository and image.tag. */
  image: { repository: string; tag: string };
  /**
   * Routes a Pod must have, and no others (no default route), when the cluster promises a closed
   * Pod network; undefined when it does not (kind gives Pods a default route).
   */
  closedPodRoutes?: string[];
  /** The node's name, for a local PersistentVolume's node affinity. */
  nodeName: string;
  /**
   * A base URL (`http://host:port`) at which this process reaches `port` of a Pod: the Pod IP
   * itself where the host is on the Pod network, else a port-forward to that Pod.
   */
  podUrl(pod: { namespace: string; name: string; ip: string }, port: number): Promise<string>;
  /** Creates an empty directory on the node for a local PersistentVolume; returns its path there. */
  makeNodeDir(name: string): Promise<string>;
  /**
   * Stops everything the cluster started and undoes its changes to this machine. Returns what
   * is still left behind afterwards (empty when nothing is).
   */
  stop(opts: { failed: boolean }): Promise<string[]>;
}
