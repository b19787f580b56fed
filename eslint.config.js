// @ts-check
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'coverage/', 'tests/controlplane/go/', '.policyguard-data/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', destructuredArrayIgnorePattern: '^_' }],
      // The seed's JSON is untyped on the wire; tests read it as such.
      '@typescript-eslint/no-explicit-any': 'off',
      'no-restricted-imports': 'off',
    },
  },
  {
    // The engine is pure: no Kubernetes, HTTP or filesystem (STYLE.md habit 1).
    files: ['src/engine/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            { group: ['node:fs', 'node:fs/*', 'fs', 'node:http', 'node:https', 'node:net', 'express', '@kubernetes/*', '@modelcontextprotocol/*'], message: 'src/engine must stay pure: no filesystem, network, Kubernetes or MCP imports.' },
            { group: ['../store/*', '../mcp/*', '../controller/*', '../audit/*', '../cli/*'], message: 'src/engine may import only src/api.' },
          ],
        },
      ],
    },
  },
);
