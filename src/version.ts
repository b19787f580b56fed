/**
 * The release version: what `policyguard --version` prints and what the MCP server reports in
 * `serverInfo`. Kept equal to package.json's `version` by a test (src/version.test.ts).
 */
export const VERSION = '0.1.0';
