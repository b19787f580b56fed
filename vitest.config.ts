import { defineConfig } from 'vitest/config';

// Three projects: `unit` runs in-process tests (engine, api, store, audit, MCP over loopback HTTP);
// `ui` drives the dashboard in a real headless Chromium; `cluster` runs against a real
// kube-apiserver + etcd started once by the control-plane harness (tests/controlplane).
// `npm test` runs all three.
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          // tests/bench: the benches' own tools (the open-loop generator), not the benches.
          include: ['src/**/*.test.ts', 'tests/standalone/**/*.test.ts', 'tests/bench/**/*.test.ts'],
          // Generous: some tests start servers and CLI processes on a busy 2-core machine.
          testTimeout: 30_000,
        },
      },
      {
        test: {
          name: 'ui',
          // The dashboard in a real headless Chromium (Debian's chromium package; see tests/ui).
          include: ['tests/ui/**/*.test.ts'],
          testTimeout: 60_000,
          hookTimeout: 60_000,
        },
      },
      {
        test: {
          name: 'cluster',
          include: ['tests/controlplane/**/*.test.ts', 'tests/cluster/**/*.test.ts', 'tests/helm/**/*.test.ts'],
          globalSetup: ['tests/controlplane/global-setup.ts'],
          // A cold control-plane build takes minutes; it happens in globalSetup, not here.
          testTimeout: 60_000,
          hookTimeout: 120_000,
        },
      },
    ],
  },
});
