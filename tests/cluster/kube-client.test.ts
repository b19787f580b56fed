/**
 * Calls to the API server reuse connections (src/kube/client.ts): client-node 2.0.1 alone opens
 * a new TLS connection per call. Counted with undici's own diagnostics channel.
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { CoreV1Api } from '@kubernetes/client-node';
import { afterEach, describe, expect, it } from 'vitest';
import { loadKubeConfig } from '../../src/kube/client.js';
import { sharedKubeconfigPath } from '../controlplane/test-context.js';

let connects = 0;
const onConnect = () => connects++;
afterEach(() => unsubscribe('undici:client:connected', onConnect));

describe('the Kubernetes client', () => {
  it('reuses one kept-alive connection for a sequence of API calls', async () => {
    const api = loadKubeConfig(sharedKubeconfigPath()).makeApiClient(CoreV1Api);
    await api.listNamespace(); // the first call connects
    subscribe('undici:client:connected', onConnect);
    for (let i = 0; i < 20; i++) await api.listNamespace();
    expect(connects).toBe(0);
  });
});
